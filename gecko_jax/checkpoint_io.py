"""Orbax checkpoints of a run: train state and data position, saved together.

Layout of a workdir:

    WORKDIR/config.json          the run's ConfigDict (written at start)
    WORKDIR/config.gin           gin bindings that swapped components, if any
    WORKDIR/checkpoints/<step>/  one folder per saved step, holding
        state/                   params, optimizer state and step (sharded arrays)
        data/                    the data iterator's position (JSON)

Orbax writes each step to a temporary folder and renames it when complete, so
a run killed mid-save leaves no half-written step behind. A finished step that
is damaged later (a truncated file) fails to restore; `restore_latest` then
says so in one line, falls back to the previous step and moves the damaged one
to WORKDIR/damaged_checkpoints/.
"""

import asyncio
import contextlib
import json
import os
import time
from typing import Any, Iterator, Optional

import gin
import jax
from etils import epath
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util
from orbax.checkpoint._src import asyncio_utils as orbax_asyncio

from gecko_jax import workdir_files
from gecko_jax.config_base import base_config
from gecko_jax.errors import UserError

CONFIG_FILE = "config.json"
GIN_FILE = "config.gin"
CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "damaged_checkpoints"


def absolute(workdir: str) -> str:
    """Orbax needs absolute paths; URLs such as gs://... are already absolute."""
    return workdir if "://" in workdir else os.path.abspath(workdir)


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(absolute(workdir), CHECKPOINT_DIR)


def create_manager(workdir: str, keep: int, async_save: bool) -> ocp.CheckpointManager:
    """A manager keeping the `keep` newest steps (saving is triggered explicitly)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        enable_async_checkpointing=async_save,
        create=True,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=("state", "data"))


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict) -> None:
    manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state))
    )


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any) -> Optional[tuple[int, Any, dict]]:
    """Restores the newest step that reads back intact.

    Newer steps that fail to read are moved to WORKDIR/damaged_checkpoints/
    once an older one has been restored: left in place, Orbax would count them
    as the latest steps and skip every save up to their step numbers. Each is
    reported in one warning line that names the step restored instead.

    Args:
      manager: the run's checkpoint manager.
      abstract_state: a pytree of `jax.ShapeDtypeStruct` with shardings, the
        layout to restore into.

    Returns:
      (step, state, data_state), or None when there is no usable checkpoint.

    Raises:
      UserError: the parameters of the config differ from the checkpoint's (the
        workdir was started with another model), or no step reads back.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    damaged = {}
    for step in steps:
        # Checked before reading: a checkpoint of another model fails to
        # restore too, and must be refused rather than moved aside as damaged.
        difference = _params_difference(manager, step, abstract_state)
        if difference:
            raise UserError(
                f"checkpoint step {step} in {manager.directory} does not fit the config: "
                f"{difference}; resume with the workdir's {CONFIG_FILE} or pick a new --workdir"
            )
        try:
            with _pending_reads_finish_on_error():
                restored = manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
                    ),
                )
        except Exception as err:  # pylint: disable=broad-except
            # Any read failure means this step is unusable; an older one may be fine.
            damaged[step] = _read_error(err)
            continue
        _move_aside(manager, list(damaged))
        aside = epath.Path(manager.directory).parent / DAMAGED_DIR
        for bad_step, reason in damaged.items():
            print(
                f"warning: checkpoint step {bad_step} in {manager.directory} could not be read "
                f"({reason}); resuming from step {step} instead, and moved step {bad_step} "
                f"to {aside}",
                flush=True,
            )
        return step, restored.state, restored.data
    if steps:
        reasons = "; ".join(f"step {step}: {reason}" for step, reason in damaged.items())
        raise UserError(
            f"none of the checkpoints {steps} in {manager.directory} could be read "
            f"({reasons}); move the folder away to start from scratch"
        )
    return None


def _read_error(err: BaseException) -> str:
    """The first line of the innermost cause of a failed restore.

    Orbax wraps TensorStore's error (which names the file and the byte range
    that is missing) in one that prints the whole TensorStore spec, dozens of
    lines; the cause alone says what is wrong.
    """
    while err.__cause__ is not None:
        err = err.__cause__
    lines = str(err).splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _run_until_pending_reads_finish(coro):
    """Orbax's event-loop runner, except that on an error the loop's tasks finish first.

    Orbax reads the arrays of a checkpoint as concurrent asyncio tasks and, when
    one fails, raises at once and closes the loop with the others still
    reading. TensorStore then completes their reads onto the closed loop
    ("RuntimeError: Event loop is closed") and the abandoned coroutines are
    garbage-collected ("Exception ignored in: <coroutine ...>"): a traceback,
    with a page of TensorStore spec, per array, thousands of lines around the
    one warning of a damaged checkpoint. Awaiting the pending tasks before
    closing ends them cleanly; they only read what an intact checkpoint would
    have had read anyway.
    """
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        try:
            return loop.run_until_complete(coro)
        except Exception:
            pending = asyncio.all_tasks(loop)
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            raise
    finally:
        asyncio.set_event_loop(None)
        loop.close()


@contextlib.contextmanager
def _pending_reads_finish_on_error() -> Iterator[None]:
    """Restores inside use `_run_until_pending_reads_finish` as Orbax's loop runner.

    Orbax (pinned in setup.cfg) runs every synchronous restore through the
    private `asyncio_utils._run_sync_via_new_loop`; an Orbax without it is left
    as it is, with its tracebacks on a damaged checkpoint but otherwise working.
    """
    name = "_run_sync_via_new_loop"
    original = getattr(orbax_asyncio, name, None)
    if original is None:
        yield
        return
    setattr(orbax_asyncio, name, _run_until_pending_reads_finish)
    try:
        yield
    finally:
        setattr(orbax_asyncio, name, original)


def _params_difference(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> Optional[str]:
    """How the stored parameters differ from `abstract_state`'s; None if alike or unreadable."""
    path = epath.Path(manager.directory) / str(step) / "state"
    try:
        stored = ocp.PyTreeCheckpointHandler().metadata(path).tree["params"]
    except Exception:  # pylint: disable=broad-except
        return None  # No readable layout: damage, not another model.
    expected = abstract_state["params"] if isinstance(abstract_state, dict) else abstract_state.params
    stored = {"/".join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(stored).items()}
    expected = {"/".join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(expected).items()}
    for name in sorted(stored.keys() & expected.keys()):
        if stored[name] != expected[name]:
            return f"parameter {name} has shape {stored[name]} there and {expected[name]} in the config"
    if stored.keys() != expected.keys():
        only = sorted(stored.keys() ^ expected.keys())[0]
        where = "the checkpoint" if only in stored else "the config"
        return f"parameter {only} is only in {where}"
    return None


def _move_aside(manager: ocp.CheckpointManager, steps: list[int]) -> None:
    """Moves unreadable step folders out of the manager's sight, keeping them for inspection."""
    if not steps:
        return
    if jax.process_index() == 0:
        _rename_steps(epath.Path(manager.directory), steps)
    # Every host then sees the same steps, so they agree on what to save.
    ocp.multihost.sync_global_processes("gecko_jax_damaged_checkpoints_moved")
    manager.reload()


def _rename_steps(directory: epath.Path, steps: list[int]) -> None:
    aside = directory.parent / DAMAGED_DIR
    aside.mkdir(parents=True, exist_ok=True)
    for step in steps:
        target = aside / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            (directory / str(step)).rename(target)
        except Exception as err:  # pylint: disable=broad-except
            raise UserError(
                f"could not move the unreadable checkpoint {directory / str(step)} "
                f"to {aside} ({type(err).__name__}); move or delete it, then "
                "rerun"
            ) from err


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(workdir: str, config: ml_collections.ConfigDict) -> list[str]:
    """Fields whose value differs from the config stored in `workdir`, as 'f: old -> new'."""
    stored = workdir_files.read_json(epath.Path(workdir) / CONFIG_FILE)
    if stored is None:
        return []
    old = _flatten(stored)
    new = _flatten(json.loads(config.to_json_best_effort()))
    return [
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Stores the run's config beside its checkpoints (process 0 only)."""
    if jax.process_index() != 0:
        return
    workdir_files.write_text_atomic(
        epath.Path(workdir) / CONFIG_FILE, config.to_json_best_effort(indent=2, sort_keys=True)
    )


def write_gin_config(workdir: str) -> None:
    """Records the active gin bindings, so that loading the model rebuilds the same classes."""
    text = gin.config_str()
    if jax.process_index() != 0 or not text.strip():
        return
    workdir_files.write_text_atomic(epath.Path(workdir) / GIN_FILE, text)


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with, with the current schema's defaults."""
    stored = workdir_files.read_json(epath.Path(workdir) / CONFIG_FILE)
    if stored is None:
        raise UserError(
            f"{workdir} is not a training workdir (no {CONFIG_FILE}); pass the --workdir of a train.py run"
        )
    config = base_config()
    _update_locked(config, _with_moved_fields(stored))
    gin_path = epath.Path(workdir) / GIN_FILE
    if gin_path.exists():
        gin.parse_config(gin_path.read_text())
    return config


# Fields older workdirs stored elsewhere: old path -> current path. Their
# values still apply (the prompts an export writes, the evaluation batch).
_MOVED_FIELDS = {
    ("eval", "query_prompt"): ("export", "query_prompt"),
    ("eval", "sts_prompt"): ("export", "sts_prompt"),
    ("eval", "batch_size"): ("eval_batch_size",),
}


def _with_moved_fields(stored: dict) -> dict:
    """`stored` with each moved field also at its current path, unless set there."""
    for (section, name), new_path in _MOVED_FIELDS.items():
        old_section = stored.get(section)
        if not isinstance(old_section, dict) or name not in old_section:
            continue
        target = stored
        for key in new_path[:-1]:
            target = target.setdefault(key, {})
        target.setdefault(new_path[-1], old_section[name])
    return stored


def _update_locked(config: ml_collections.ConfigDict, values: dict) -> None:
    for key, value in values.items():
        if key not in config:
            continue  # A field an older schema had; it no longer affects anything.
        if isinstance(config[key], ml_collections.ConfigDict):
            _update_locked(config[key], value)
        elif isinstance(config[key], tuple):
            config[key] = tuple(value)
        else:
            config[key] = value


def finished_steps(workdir: str) -> list[int]:
    """The complete checkpoint steps of `workdir`, newest first."""
    return _finished_steps(checkpoint_dir(workdir))


def _finished_steps(directory: str) -> list[int]:
    """Step folders Orbax has finalised (temporary ones carry a suffix), newest first."""
    directory = epath.Path(directory)
    if not directory.is_dir():
        return []
    return sorted((int(entry.name) for entry in directory.iterdir() if entry.name.isdigit()), reverse=True)


def restore_params(workdir: str) -> tuple[ml_collections.ConfigDict, Any]:
    """The config and the newest readable checkpoint's parameters, as host numpy arrays."""
    config, _, params = restore_step_params(workdir)
    return config, params


def restore_step_params(
    workdir: str, step: Optional[int] = None
) -> tuple[ml_collections.ConfigDict, int, Any]:
    """The config, a checkpoint's step and its parameters, as host numpy arrays.

    Args:
      workdir: a training workdir.
      step: the checkpoint to read; None reads the newest readable one.

    Returns:
      (config, step, params).

    Raises:
      UserError: no config, no checkpoint, `step` missing, or nothing readable.
    """
    config = read_config(workdir)
    directory = checkpoint_dir(workdir)
    steps = _finished_steps(directory)
    if not steps:
        raise UserError(f"{workdir} has no checkpoints yet; train longer or set checkpoint_every")
    if step is not None:
        if step not in steps:
            raise UserError(f"{workdir} has no checkpoint at step {step}; it has steps {sorted(steps)}")
        steps = [step]
    checkpointer = ocp.PyTreeCheckpointer()
    for candidate in steps:
        path = os.path.join(directory, str(candidate), "state")
        try:
            tree = checkpointer.metadata(path).item_metadata.tree
            as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
            with _pending_reads_finish_on_error():
                state = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
        except Exception as err:  # pylint: disable=broad-except
            logging.error(
                "Checkpoint step %d unreadable (%s); trying an earlier one.", candidate, _read_error(err)
            )
            continue
        return config, candidate, state["params"]
    raise UserError(f"no readable checkpoint among steps {steps} in {directory}")
