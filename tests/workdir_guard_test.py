"""What may be a workdir, and the lock that keeps a second run out of it (workdir_guard)."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import pytest
from etils import epath
from jax.experimental import multihost_utils

from gecko_jax.errors import UserError
from gecko_jax.training import trainer
from gecko_jax.training import workdir_guard
from workdir_helpers import make_workdir, random_params, tiny_bert_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def _claim(workdir):
    with workdir_guard.claimed(str(workdir)):
        pass


def _write_lock(workdir, pid, host=None, heartbeat_age=0.0):
    """A lock as another run would have left it."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / workdir_guard.MARKER_FILE).write_text("{}")
    (workdir / workdir_guard.LOCK_FILE).write_text(
        json.dumps(
            dict(
                host=host or socket.gethostname(),
                pid=pid,
                started="earlier",
                heartbeat=time.time() - heartbeat_age,
                token="theirs",
            )
        )
    )


@pytest.fixture
def other_process():
    """A live process of this host that is not the test's."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_an_empty_workdir_flag_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"^--workdir is empty \(an unset variable\?\)"):
        _claim("")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "files",
    [
        {
            "config.json": '{"hidden_size": 384, "architectures": ["BertModel"]}',
            "model.safetensors": "weights",
        },  # An exported model.
        {"README.md": "# a checkout", "setup.cfg": ""},
        {"config.json": "not json"},
    ],
)
def test_a_folder_of_other_files_is_refused_and_left_as_it_was(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(UserError, match="holds files but is not a training workdir"):
        _claim(tmp_path)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == files


def test_new_empty_log_only_marked_and_earlier_workdirs_are_accepted(tmp_path):
    _claim(tmp_path / "new")
    assert (tmp_path / "new" / workdir_guard.MARKER_FILE).is_file()
    (tmp_path / "empty").mkdir()
    _claim(tmp_path / "empty")
    (tmp_path / "sweep_point").mkdir()
    (tmp_path / "sweep_point" / "train.log").write_text("started\n")
    _claim(tmp_path / "sweep_point")
    config = tiny_bert_config()
    # A workdir of an earlier version: config.json and checkpoints, no marker.
    earlier = pathlib.Path(make_workdir(tmp_path / "earlier", config, {1: random_params(config)}))
    _claim(earlier)
    for name in ("new", "empty", "sweep_point", "earlier"):
        assert not (tmp_path / name / workdir_guard.LOCK_FILE).exists(), name


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "run").write_text("")
    with pytest.raises(UserError, match=r"is a file, not a folder; pass a new folder$"):
        _claim(tmp_path / "run")


def _read_only_storage(monkeypatch):
    """Every write through epath fails as on a read-only mount (chmod does not stop root)."""

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    path_type = type(epath.Path("/"))
    monkeypatch.setattr(path_type, "write_text", refuse)
    monkeypatch.setattr(path_type, "mkdir", refuse)


def test_a_read_only_workdir_is_one_line(tmp_path, monkeypatch):
    _read_only_storage(monkeypatch)
    with pytest.raises(UserError, match=r"is not a folder this run can write to \(PermissionError"):
        _claim(tmp_path)


def test_a_finished_read_only_workdir_is_refused_before_resuming(tmp_path, monkeypatch, capsys):
    config = tiny_bert_config()
    config.total_steps = 1
    workdir = make_workdir(tmp_path / "run", config, {1: random_params(config)})
    config_before = (tmp_path / "run" / "config.json").read_text()
    _read_only_storage(monkeypatch)
    with pytest.raises(UserError, match="is not a folder this run can write to"):
        trainer.train_and_evaluate(config, workdir)
    assert "Resuming" not in capsys.readouterr().out
    assert (tmp_path / "run" / "config.json").read_text() == config_before


def test_a_live_run_holds_the_workdir(tmp_path, other_process):
    _write_lock(tmp_path, other_process.pid)
    lock_text = (tmp_path / workdir_guard.LOCK_FILE).read_text()
    with pytest.raises(UserError) as refused:
        _claim(tmp_path)
    message = str(refused.value)
    assert f"is in use by pid {other_process.pid} on host {socket.gethostname()}" in message
    assert f"delete {tmp_path / workdir_guard.LOCK_FILE}" in message
    assert "\n" not in message
    assert (tmp_path / workdir_guard.LOCK_FILE).read_text() == lock_text


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, other_process, capsys):
    _write_lock(tmp_path, other_process.pid)
    other_process.send_signal(signal.SIGKILL)
    other_process.wait()
    _claim(tmp_path)
    assert f"pid {other_process.pid} on {socket.gethostname()}, which held it, no longer runs" in (
        capsys.readouterr().out
    )
    assert not (tmp_path / workdir_guard.LOCK_FILE).exists()


def test_a_lock_of_another_host_counts_until_its_heartbeat_is_stale(tmp_path):
    _write_lock(tmp_path, 1, host="elsewhere", heartbeat_age=30)
    with pytest.raises(UserError, match="in use by pid 1 on host elsewhere"):
        _claim(tmp_path)
    _write_lock(tmp_path, 1, host="elsewhere", heartbeat_age=workdir_guard.STALE_AFTER_S + 1)
    _claim(tmp_path)


def test_the_lock_is_refreshed_while_held_and_released_on_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(workdir_guard, "HEARTBEAT_S", 0.05)
    lock_path = tmp_path / workdir_guard.LOCK_FILE
    with pytest.raises(trainer.Preempted):
        with workdir_guard.claimed(str(tmp_path)):
            held = json.loads(lock_path.read_text())
            assert (held["host"], held["pid"]) == (socket.gethostname(), os.getpid())
            time.sleep(0.5)
            assert json.loads(lock_path.read_text())["heartbeat"] > held["heartbeat"]
            raise trainer.Preempted(3)
    assert not lock_path.exists()
    with pytest.raises(RuntimeError):
        with workdir_guard.claimed(str(tmp_path)):
            raise RuntimeError("a bug")
    assert not lock_path.exists()


def _as_process(monkeypatch, index, verdict_of_process_zero=None):
    """Makes this process `index` of 2; the broadcast gives process 0's refusal flag."""
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: index)
    monkeypatch.setattr(
        multihost_utils,
        "broadcast_one_to_all",
        lambda value: value if verdict_of_process_zero is None else verdict_of_process_zero,
    )


def test_on_several_hosts_only_process_zero_checks_and_locks(tmp_path, other_process, monkeypatch):
    _write_lock(tmp_path, other_process.pid)
    lock_text = (tmp_path / workdir_guard.LOCK_FILE).read_text()
    # Process 0 took the lock (the one in the folder): process 1 trains beside it.
    _as_process(monkeypatch, 1, verdict_of_process_zero=0)
    _claim(tmp_path)
    assert (tmp_path / workdir_guard.LOCK_FILE).read_text() == lock_text
    _as_process(monkeypatch, 1, verdict_of_process_zero=1)
    with pytest.raises(UserError, match="process 0 refused --workdir="):
        _claim(tmp_path)
    _as_process(monkeypatch, 0)
    with pytest.raises(UserError, match=f"in use by pid {other_process.pid}"):
        _claim(tmp_path)


def test_train_py_refuses_a_workdir_another_run_holds(tmp_path):
    env = dict(os.environ, XLA_FLAGS="")
    with workdir_guard.claimed(str(tmp_path / "run")):
        result = subprocess.run(
            [
                sys.executable,
                str(REPO / "launch" / "train.py"),
                f"--config={REPO}/configs/gecko_768.py:runlocal",
                f"--workdir={tmp_path / 'run'}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: {tmp_path / 'run'} is in use by pid {os.getpid()} on host")
    )
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [workdir_guard.MARKER_FILE]
