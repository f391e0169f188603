"""`launch/sweep.py`: printed commands, and local runs that survive a failing point."""

import csv
import os
import pathlib
import shlex
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
RUNLOCAL = f"{REPO}/configs/gecko_768.py:runlocal"


def _sweep(*args, check=False):
    env = dict(os.environ, XLA_FLAGS="")  # One CPU device per point, as on a laptop.
    return subprocess.run(
        [sys.executable, str(REPO / "launch" / "sweep.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=check,
        cwd=REPO,
    )


def _sweep_file(tmp_path, body):
    path = tmp_path / "points.py"
    path.write_text(f"def get_sweep():\n    return {body}\n")
    return path


def test_print_mode_prints_one_train_command_per_point(tmp_path):
    points = _sweep_file(
        tmp_path,
        '[{"config.optimizer.learning_rate": lr} for lr in (1e-5, 3e-5)]'
        ' + [{"config.loss.mrl_dims": (32, 16), "config.seed": 1}]',
    )
    result = _sweep(
        f"--config={RUNLOCAL}",
        f"--sweep={points}",
        "--mode=print",
        "--workdir=runs/s",
        "--config.total_steps=2",
        check=True,
    )
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    assert shlex.split(lines[0]) == [
        "python",
        "launch/train.py",
        f"--config={RUNLOCAL}",
        "--workdir=runs/s/p00_learning_rate=1e-05",
        "--config.total_steps=2",
        "--config.optimizer.learning_rate=1e-05",
    ]
    assert shlex.split(lines[2])[-2:] == ["--config.loss.mrl_dims=(32,16)", "--config.seed=1"]
    assert "--workdir=runs/s/p02_mrl_dims=32-16_seed=1" in lines[2]


def test_print_mode_with_tpu_prints_the_slice_launch(tmp_path):
    points = _sweep_file(tmp_path, '[{"config.optimizer.learning_rate": 1e-5}]')
    result = _sweep(
        f"--config={RUNLOCAL}",
        f"--sweep={points}",
        "--mode=print",
        "--tpu=gecko",
        "--zone=us-west4-a",
        "--workdir=gs://bucket/lr",
        check=True,
    )
    assert shlex.split(result.stdout.strip()) == [
        "python",
        "launch/tpu/run.py",
        "--name=gecko",
        "--zone=us-west4-a",
        "--run_name=p00_learning_rate=1e-05",
        "--",
        f"--config={RUNLOCAL}",
        "--workdir=gs://bucket/lr/p00_learning_rate=1e-05",
        "--config.optimizer.learning_rate=1e-05",
    ]
    local_workdir = _sweep(f"--config={RUNLOCAL}", f"--sweep={points}", "--tpu=gecko")
    assert local_workdir.returncode == 2
    assert local_workdir.stderr.startswith("error: TPU hosts need a shared workdir")


@pytest.mark.parametrize(
    "body,message",
    [
        ('[{"config.optimizer.lr": 1e-5}]', "point 0: unknown field 'config.optimizer.lr'"),
        ('[{"config.optimizer": 1}]', "'config.optimizer' is not a single field"),
        ("[1e-5]", "point 0 is a float, not a dict"),
        ("[]", "must return a non-empty list"),
    ],
)
def test_bad_sweep_files_are_one_line_errors(tmp_path, body, message):
    result = _sweep(f"--config={RUNLOCAL}", f"--sweep={_sweep_file(tmp_path, body)}")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


@pytest.mark.slow
def test_local_mode_collects_results_and_survives_a_failing_point(tmp_path):
    # total_steps=0 is refused by the trainer: the second point must fail alone.
    points = _sweep_file(tmp_path, '[{"config.optimizer.learning_rate": 1e-3}, {"config.total_steps": 0}]')
    root = tmp_path / "sweep"
    result = _sweep(
        f"--config={RUNLOCAL}",
        f"--sweep={points}",
        "--mode=local",
        "--parallel=2",
        f"--workdir={root}",
        "--config.total_steps=2",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "p01_total_steps=0 failed (exit 2): error: --config.total_steps=0 is out of range" in result.stdout
    assert "1 of 2 points failed: p01_total_steps=0" in result.stdout
    with open(root / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["name"] for row in rows] == ["p00_learning_rate=0.001", "p01_total_steps=0"]
    assert rows[0]["status"] == "ok" and float(rows[0]["train/loss"]) > 0
    assert rows[0]["config.optimizer.learning_rate"] == "0.001"
    assert rows[1]["status"] == "failed (exit 2)" and not rows[1]["train/loss"]
    assert (root / "p00_learning_rate=0.001" / "checkpoints" / "2").is_dir()
