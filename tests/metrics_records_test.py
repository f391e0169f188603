"""metrics.jsonl and eval.jsonl hold each step once, across crashes and resumes."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

from gecko_jax import workdir_files

REPO = pathlib.Path(__file__).resolve().parents[1]


def _steps(path: pathlib.Path, key: str = "") -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if key in line]


def test_keep_records_through_drops_later_steps_and_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1}\n{"step": 2, "a": 2}\n{"step": 3, "a": 3}\n{"step": 4, "a"')
    workdir_files.keep_records_through(path, 2)
    assert path.read_text() == '{"step": 1, "a": 1}\n{"step": 2, "a": 2}\n'
    workdir_files.append_line(path, '{"step": 3, "a": 30}')
    assert _steps(path) == [1, 2, 3]
    before = os.stat(path).st_mtime_ns
    workdir_files.keep_records_through(path, 5)  # Nothing to drop: left untouched.
    assert os.stat(path).st_mtime_ns == before
    workdir_files.keep_records_through(path, -1)  # A new run: every record goes.
    assert path.read_text() == ""
    workdir_files.keep_records_through(tmp_path / "absent.jsonl", 3)
    assert not (tmp_path / "absent.jsonl").exists()


def test_resuming_from_an_older_checkpoint_logs_each_step_once(tmp_path, shared_data):
    del shared_data  # The STS file comes from there.
    command = [
        sys.executable,
        str(REPO / "launch" / "train.py"),
        f"--config={REPO}/configs/gecko_768.py:runlocal",
        f"--workdir={tmp_path}",
        "--config.total_steps=4",
        "--config.checkpoint_every=2",
        "--config.async_checkpointing=False",
        "--config.eval_every=2",
        "--config.evals={'sts': {'task': 'sts', 'data': 'sick/SICK_trial.txt'}}",
    ]
    env = dict(os.environ, XLA_FLAGS="")
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)
    # As if the run had died after logging step 4, before its checkpoint,
    # in the middle of writing a record.
    shutil.rmtree(tmp_path / "checkpoints" / "4")
    with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 5, "train.lo')
    result = subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=600)
    assert "Resuming from checkpoint step 2" in result.stdout
    assert _steps(tmp_path / "metrics.jsonl", "train.loss") == [1, 2, 3, 4]
    assert _steps(tmp_path / "metrics.jsonl", "evals.") == [0, 2, 4]
    assert _steps(tmp_path / "eval.jsonl") == [0, 2, 4]
