"""What a training workdir may be, and one run at a time in it.

`claimed(workdir)` is entered before a run writes anything. It refuses, in one line:

  * an empty `--workdir` (an unset variable), which would train into the
    current directory;
  * a path that is a file, or a folder that cannot be written;
  * a folder that is neither new, nor empty, nor made by this project. Empty
    means no entries but `*.log` files (the log a sweep or `tee` opens before
    the run starts). Made by this project means it holds MARKER_FILE, written
    when a run first claims the folder, or a config.json with the schema of
    `config_base.base_config` (how workdirs of earlier versions are known).
    Anything else (a checkout, an exported model, a home folder) would get its
    config.json replaced and run files scattered into it;
  * a workdir another run holds the lock of.

The lock is WORKDIR/LOCK_FILE, JSON naming the host, pid and start of the run
holding it, refreshed every HEARTBEAT_S seconds and deleted when the run ends
(also on errors and after SIGTERM). A lock left by a killed run is taken over
when its pid no longer runs on this host, or when it has not been refreshed for
STALE_AFTER_S seconds (a run on another host that died, e.g. a lost TPU VM).
It is a file written through `etils.epath` rather than a `filelock` OS lock
because pods train into gs://, where OS locks do not exist, and because its
content lets the refusal say who holds it. On a local disk it is created by an
atomic hard link, so of two runs started at once exactly one gets it; on an
object store it is written and read back a moment later, so the later writer
of two simultaneous starts wins and the other is refused.

On a multi-host job every host runs the same command on one shared workdir:
process 0 alone checks and locks it, and the others wait for its verdict,
so they are never refused by its lock nor train on when it was refused.
"""

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from typing import Callable, Iterator, Optional

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from gecko_jax import checkpoint_io
from gecko_jax import workdir_files
from gecko_jax.errors import UserError

MARKER_FILE = "gecko_jax_workdir.json"
LOCK_FILE = "run.lock"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0
_SETTLE_S = 1.0  # How long an object-store lock is left before it is read back.
# Top-level fields every version of base_config has had: a config.json with all
# of them was written by `checkpoint_io.write_config`.
_RUN_CONFIG_FIELDS = frozenset(("seed", "total_steps", "batch_size", "model", "data", "loss", "optimizer"))


@contextlib.contextmanager
def claimed(workdir: str) -> Iterator[str]:
    """Checks `workdir` and holds its lock while the body runs.

    Args:
      workdir: the `--workdir` of a training run, local or gs://.

    Yields:
      The workdir as an absolute path.

    Raises:
      UserError: the workdir may not be trained in, or another run holds it.
    """
    if not workdir.strip():
        raise UserError(
            "--workdir is empty (an unset variable?); pass the folder to train in, e.g. --workdir=runs/NAME"
        )
    workdir = checkpoint_io.absolute(workdir)
    lock = _decided_by_process_zero(workdir, lambda: _claim(epath.Path(workdir)))
    try:
        yield workdir
    finally:
        if lock is not None:
            lock.release()


def _decided_by_process_zero(workdir: str, claim: Callable[[], "_Lock"]) -> Optional["_Lock"]:
    """`claim()` on process 0; its verdict on every process (None for all but process 0)."""
    if jax.process_count() == 1:
        return claim()
    lock, error = None, None
    if jax.process_index() == 0:
        try:
            lock = claim()
        except Exception as err:  # pylint: disable=broad-except
            error = err  # Raised after the broadcast, which the other hosts wait in.
    refused = int(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
    if error is not None:
        raise error
    if refused:
        raise UserError(f"process 0 refused --workdir={workdir}; its error line says why")
    return lock


def _claim(workdir: epath.Path) -> "_Lock":
    try:
        _check_folder(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        if not (workdir / MARKER_FILE).exists():
            workdir_files.write_text_atomic(
                workdir / MARKER_FILE, json.dumps({"made_by": "gecko_jax launch/train.py", "created": _now()})
            )
        return _Lock.acquire(workdir / LOCK_FILE)
    except UserError:
        raise
    except Exception as err:  # pylint: disable=broad-except
        # Any failure to list or write the folder means a run could not save there.
        detail = str(err).splitlines()[0] if str(err) else ""
        raise UserError(
            f"--workdir={workdir} is not a folder this run can write to "
            f"({type(err).__name__}: {detail}); pass another --workdir"
        ) from err


def _check_folder(workdir: epath.Path) -> None:
    if not workdir.exists():
        return
    if not workdir.is_dir():
        raise UserError(f"--workdir={workdir} is a file, not a folder; pass a new folder")
    names = [entry.name for entry in workdir.iterdir()]
    if all(name.endswith(".log") for name in names) or MARKER_FILE in names:
        return
    if checkpoint_io.CONFIG_FILE in names and _is_run_config(workdir / checkpoint_io.CONFIG_FILE):
        return
    raise UserError(
        f"--workdir={workdir} holds files but is not a training workdir (no "
        f"{MARKER_FILE}, nor a {checkpoint_io.CONFIG_FILE} of a training run); "
        "pass a new or empty folder"
    )


def _is_run_config(path: epath.Path) -> bool:
    try:
        stored = json.loads(path.read_text())
    except ValueError:
        return False  # Another tool's file, or damaged: either way not known to be ours.
    return isinstance(stored, dict) and _RUN_CONFIG_FIELDS <= stored.keys()


class _Lock:
    """The lock file of one run, refreshed by a background thread until `release`."""

    def __init__(self, path: epath.Path, owner: dict):
        self._path = path
        self._owner = owner
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._refresh_until_released, daemon=True, name="workdir-lock-heartbeat"
        )
        self._thread.start()

    @classmethod
    def acquire(cls, path: epath.Path) -> "_Lock":
        """Takes the lock at `path`, over a stale one; UserError if a live run holds it."""
        held = _read(path)
        if held is not None:
            stale = _why_stale(held)
            if stale is None:
                raise UserError(_held_message(path, held))
            print(f"warning: taking over the lock {path}: {stale}", flush=True)
            path.unlink(missing_ok=True)
        owner = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": _now(),
            "heartbeat": time.time(),
            "token": uuid.uuid4().hex,
        }
        if not _create(path, owner):
            raise UserError(_held_message(path, _read(path) or {}))
        return cls(path, owner)

    def release(self) -> None:
        """Stops refreshing and deletes the lock if it is still this run's."""
        self._stop.set()
        self._thread.join()
        try:
            if self._is_ours():
                self._path.unlink()
        except Exception as err:  # pylint: disable=broad-except
            # The run's own outcome (or error) matters more than a lock left behind.
            logging.warning("could not delete the lock %s: %s", self._path, err)

    def _is_ours(self) -> bool:
        return (_read(self._path) or {}).get("token") == self._owner["token"]

    def _refresh_until_released(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                if not self._is_ours():
                    print(
                        f"warning: another run took over the lock {self._path}; this run and "
                        "that one now write the same workdir",
                        flush=True,
                    )
                    return
                self._owner["heartbeat"] = time.time()
                workdir_files.write_text_atomic(self._path, json.dumps(self._owner))
            except Exception as err:  # pylint: disable=broad-except
                # A transient storage error must not stop training; the next beat retries.
                logging.warning("could not refresh the lock %s: %s", self._path, err)


def _create(path: epath.Path, owner: dict) -> bool:
    """Writes the lock unless another run's appears first; whether this run got it."""
    text = json.dumps(owner)
    if "://" in str(path):
        path.write_text(text)
        time.sleep(_SETTLE_S)  # A run that wrote at the same moment has now written too.
        return (_read(path) or {}).get("token") == owner["token"]
    # A hard link to a complete file creates the name atomically, content included.
    draft = path.with_name(f"{path.name}.{owner['token']}")
    draft.write_text(text)
    try:
        os.link(draft, path)
        return True
    except FileExistsError:
        return False
    finally:
        draft.unlink()


def _read(path: epath.Path) -> Optional[dict]:
    """The lock's owner; None without a lock, {} for an unreadable one."""
    if not path.exists():
        return None
    try:
        held = json.loads(path.read_text())
    except (ValueError, FileNotFoundError):
        return {}  # Cut short, or deleted by its run since `exists`.
    return held if isinstance(held, dict) else {}


def _why_stale(held: dict) -> Optional[str]:
    """Why the run that wrote `held` cannot be running any more; None if it may be."""
    if not held:
        return "it is unreadable and names no run"
    host, pid = held.get("host"), held.get("pid")
    if host == socket.gethostname() and (pid == os.getpid() or not _running(pid)):
        return f"pid {pid} on {host}, which held it, no longer runs"
    age = time.time() - float(held.get("heartbeat", 0))
    if age > STALE_AFTER_S:
        return f"pid {pid} on {host} has not refreshed it for {age:.0f} s"
    return None


def _running(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # Another user's process.
    try:
        # A killed process its parent has not yet waited for is a zombie: it runs nothing.
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _held_message(path: epath.Path, held: dict) -> str:
    age = time.time() - float(held.get("heartbeat", time.time()))
    return (
        f"{path.parent} is in use by pid {held.get('pid', '?')} on host "
        f"{held.get('host', '?')} (started {held.get('started', '?')}, lock refreshed "
        f"{age:.0f} s ago); wait for that run to end or stop it, or if it is gone delete "
        f"{path} (a lock not refreshed for {STALE_AFTER_S:.0f} s is taken over)"
    )


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
