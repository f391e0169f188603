"""A diverging run stops with one line and never saves a non-finite state."""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np

from gecko_jax import checkpoint_io

REPO = pathlib.Path(__file__).resolve().parents[1]


def _train(workdir, *overrides):
    env = dict(os.environ, XLA_FLAGS="")  # One CPU device.
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "launch" / "train.py"),
            f"--config={REPO}/configs/gecko_768.py:runlocal",
            f"--workdir={workdir}",
            *overrides,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _saved_params_are_finite(workdir) -> list[bool]:
    return [
        all(
            np.all(np.isfinite(leaf))
            for leaf in jax.tree.leaves(checkpoint_io.restore_step_params(str(workdir), step)[2])
        )
        for step in checkpoint_io.finished_steps(str(workdir))
    ]


def test_divergence_between_log_lines_is_not_saved(tmp_path):
    # The parameters blow up within three steps; the save at step 3 comes
    # before the first log line (step 6) would have shown the loss.
    result = _train(
        tmp_path,
        "--config.optimizer.learning_rate=1e9",
        "--config.log_every=6",
        "--config.async_checkpointing=False",
        "--config.total_steps=6",
    )
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "training diverged at step" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert all(_saved_params_are_finite(tmp_path))
    saved = checkpoint_io.finished_steps(str(tmp_path))
    if saved:
        assert f"rerunning resumes from checkpoint step {saved[0]}" in errors[0]
    else:
        assert "a rerun starts from the beginning" in errors[0]


def test_divergence_after_a_checkpoint_names_it(tmp_path):
    # Warmup keeps the first steps' rate small, so step 1 is saved before the blow-up.
    result = _train(
        tmp_path,
        "--config.optimizer.learning_rate=1e9",
        "--config.log_every=1",
        "--config.checkpoint_every=1",
        "--config.optimizer.warmup_steps=4",
        "--config.total_steps=6",
    )
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    saved = checkpoint_io.finished_steps(str(tmp_path))
    assert len(errors) == 1 and saved, result.stdout + result.stderr
    assert f"rerunning resumes from checkpoint step {saved[0]}" in errors[0]
    assert all(_saved_params_are_finite(tmp_path))
