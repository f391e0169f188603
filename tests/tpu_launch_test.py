"""`launch/tpu/*.py --dry-run`: the gcloud commands each script would run."""

import pathlib
import shlex
import subprocess
import sys

import pytest

from gecko_jax.errors import UserError
from gecko_jax.launch_tools import tpu

REPO = pathlib.Path(__file__).resolve().parents[1]
SLICE = ("--name=gecko", "--zone=us-west4-a", "--project=proj")
LOCATION = ["--zone=us-west4-a", "--project=proj"]


def _dry_run(script, *args):
    result = subprocess.run(
        [sys.executable, str(REPO / "launch" / "tpu" / script), *SLICE, "--dry-run", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=REPO,
    )
    return result, [shlex.split(line) for line in result.stdout.strip().splitlines()]


def test_create():
    result, commands = _dry_run("create.py", "--accelerator=v5litepod-16", "--spot")
    assert result.returncode == 0, result.stderr
    assert commands == [
        [
            "gcloud",
            "compute",
            "tpus",
            "tpu-vm",
            "create",
            "gecko",
            "--accelerator-type=v5litepod-16",
            "--version=v2-alpha-tpuv5-lite",
            *LOCATION,
            "--spot",
        ]
    ]


def test_install_copies_the_checkout_to_all_workers():
    result, commands = _dry_run("install.py", "--source=/src/gecko_jax")
    assert result.returncode == 0, result.stderr
    tar, scp, ssh = commands
    assert tar[:3] == ["tar", "czf", tpu.ARCHIVE] and "--exclude=.venv" in tar
    assert tar[-3:] == ["-C", "/src/gecko_jax", "."]
    assert scp == [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "scp",
        tpu.ARCHIVE,
        f"gecko:{tpu.ARCHIVE}",
        "--worker=all",
        *LOCATION,
    ]
    assert ssh[:7] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "gecko", "--worker=all"]
    remote = ssh[7].removeprefix("--command=")
    assert remote.startswith(f"mkdir -p gecko_jax && tar xzf {tpu.ARCHIVE} -C gecko_jax")
    assert "pip install -q -e gecko_jax" in remote and "'jax[tpu]==0.10.2'" in remote


def test_install_from_a_repository():
    _, commands = _dry_run("install.py", "--repo=https://example.com/g.git", "--ref=v1")
    assert len(commands) == 1
    assert "git clone https://example.com/g.git gecko_jax" in commands[0][7]
    assert "git checkout v1" in commands[0][7]


def test_run_starts_the_same_train_command_on_every_worker():
    result, commands = _dry_run(
        "run.py",
        "--run_name=r1",
        "--",
        "--config=configs/gecko_768.py",
        "--workdir=gs://bucket/r1",
        "--config.total_steps=5",
    )
    assert result.returncode == 0, result.stderr
    [ssh] = commands
    assert ssh[5:7] == ["gecko", "--worker=all"] and ssh[8:] == LOCATION
    assert ssh[7] == (
        "--command=cd gecko_jax && mkdir -p logs && nohup .venv/bin/python "
        "launch/train.py --config=configs/gecko_768.py --workdir=gs://bucket/r1 "
        "--config.total_steps=5 > logs/r1.log 2>&1 < /dev/null &"
    )


def test_run_needs_a_shared_workdir():
    result, _ = _dry_run("run.py", "--", "--config=configs/gecko_768.py", "--workdir=runs/x")
    assert result.returncode == 2
    assert result.stderr.startswith("error: a multi-host run needs a --workdir all hosts share")


def test_logs_and_delete():
    _, [logs] = _dry_run("logs.py", "--run_name=r1", "--worker=3", "--follow")
    assert logs[5:8] == ["gecko", "--worker=3", "--command=tail -n50 -f gecko_jax/logs/r1.log"]
    _, [delete] = _dry_run("delete.py")
    assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "gecko", "--quiet", *LOCATION]


def test_execute_reports_a_missing_gcloud(monkeypatch, capsys):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UserError, match="gcloud is not installed"):
        tpu.execute(tpu.delete_commands(tpu.Slice("gecko")), dry_run=False)
    assert capsys.readouterr().out.startswith("gcloud compute tpus tpu-vm delete gecko")
