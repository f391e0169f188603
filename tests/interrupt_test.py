"""Ctrl-C stops a run as SIGTERM does: a checkpoint, then a status that says so."""

import os
import pathlib
import signal
import subprocess
import sys

from gecko_jax import checkpoint_io

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_ctrl_c_saves_then_exits_130_and_the_rerun_resumes(tmp_path):
    command = [
        sys.executable,
        str(REPO / "launch" / "train.py"),
        f"--config={REPO}/configs/gecko_768.py:runlocal",
        f"--workdir={tmp_path}",
        "--config.total_steps=200",
        "--config.checkpoint_every=0",
        "--config.log_every=1",
    ]
    env = dict(os.environ, XLA_FLAGS="")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("step 2/"):
            proc.send_signal(signal.SIGINT)
            break
    out = proc.stdout.read()
    assert proc.wait(timeout=300) == 130, out
    assert "Ctrl-C: saving a checkpoint after this step" in out
    saved = checkpoint_io.finished_steps(str(tmp_path))
    assert saved and saved[0] < 200
    assert f"Stopped at step {saved[0]} after Ctrl-C" in out

    rerun = subprocess.run(
        command + ["--config.total_steps=" + str(saved[0] + 1)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"Resuming from checkpoint step {saved[0]}" in rerun.stdout
