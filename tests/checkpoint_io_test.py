"""Checkpoint saving, restoring, and falling back past a damaged newest step."""

import asyncio
import json
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from orbax.checkpoint._src import asyncio_utils as orbax_asyncio

from gecko_jax import checkpoint_io
from gecko_jax.config_base import base_config
from gecko_jax.errors import UserError


def _state(value):
    return {"params": {"w": jnp.full((4, 3), value, jnp.float32)}, "step": jnp.int32(value)}


def _abstract(state):
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


def _save_steps(workdir, steps):
    manager = checkpoint_io.create_manager(str(workdir), keep=5, async_save=True)
    for step in steps:
        checkpoint_io.save(manager, step, _state(step), {"next_batch": step})
    manager.wait_until_finished()
    return manager


def test_restore_latest_returns_newest_step_and_data_position(tmp_path):
    manager = _save_steps(tmp_path, [1, 2])
    step, state, data = checkpoint_io.restore_latest(manager, _abstract(_state(0)))
    assert step == 2 and data == {"next_batch": 2}
    np.testing.assert_array_equal(state["params"]["w"], np.full((4, 3), 2.0))


def test_damaged_newest_checkpoint_falls_back_to_previous(tmp_path, capsys):
    manager = _save_steps(tmp_path, [1, 2])
    state_dir = tmp_path / "checkpoints" / "2" / "state"
    for root, _, files in os.walk(state_dir):
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.truncate(0)
    step, state, _ = checkpoint_io.restore_latest(manager, _abstract(_state(0)))
    assert step == 1
    np.testing.assert_array_equal(state["params"]["w"], np.full((4, 3), 1.0))
    out = capsys.readouterr().out
    assert "checkpoint step 2 in " in out and "resuming from step 1 instead" in out
    # The damaged step is kept aside, and step 2 can be saved again: left in
    # place, Orbax would skip every save up to it.
    assert [p.name[:2] for p in (tmp_path / "damaged_checkpoints").iterdir()] == ["2-"]
    checkpoint_io.save(manager, 2, _state(7), {"next_batch": 7})
    manager.wait_until_finished()
    step, state, data = checkpoint_io.restore_latest(manager, _abstract(_state(0)))
    assert step == 2 and data == {"next_batch": 7}
    np.testing.assert_array_equal(state["params"]["w"], np.full((4, 3), 7.0))


def test_a_failed_restore_lets_the_pending_reads_finish_before_its_loop_closes():
    # One read completes from another thread, as TensorStore's do. Had the loop
    # closed when the other read failed, that completion would print "Event
    # loop is closed" and the abandoned coroutine "Exception ignored in".
    finished = []

    async def slow_read():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        threading.Timer(0.2, loop.call_soon_threadsafe, (done.set_result, "read")).start()
        finished.append(await done)

    async def failing_read():
        raise OSError("truncated")

    async def restore():
        await asyncio.gather(slow_read(), failing_read())

    with pytest.raises(OSError, match="truncated"):
        checkpoint_io._run_until_pending_reads_finish(restore())  # pylint: disable=protected-access
    assert finished == ["read"]


def test_orbax_reads_a_damaged_step_through_that_loop(tmp_path, monkeypatch):
    failures = []
    draining = checkpoint_io._run_until_pending_reads_finish  # pylint: disable=protected-access

    def recording(coro):
        try:
            return draining(coro)
        except Exception as err:
            failures.append(err)
            raise

    monkeypatch.setattr(checkpoint_io, "_run_until_pending_reads_finish", recording)
    orbax_runner = orbax_asyncio._run_sync_via_new_loop  # pylint: disable=protected-access
    manager = checkpoint_io.create_manager(str(tmp_path), keep=5, async_save=False)
    for step in (1, 2):
        # Random values, so that the array is stored in a data file of its own size.
        weights = np.random.default_rng(step).normal(size=(128, 128)).astype(np.float32)
        checkpoint_io.save(
            manager,
            step,
            {"params": {"w": jnp.asarray(weights)}, "step": jnp.int32(step)},
            {"next_batch": step},
        )
    files = [path for path in (tmp_path / "checkpoints" / "2" / "state").rglob("*") if path.is_file()]
    largest = max(files, key=lambda path: path.stat().st_size)
    os.truncate(largest, largest.stat().st_size // 2)
    abstract = _abstract({"params": {"w": jnp.zeros((128, 128))}, "step": jnp.int32(0)})
    assert checkpoint_io.restore_latest(manager, abstract)[0] == 1
    # Step 2's array reads failed inside it, and Orbax has its own runner back.
    assert len(failures) == 1
    assert orbax_asyncio._run_sync_via_new_loop is orbax_runner  # pylint: disable=protected-access


def test_checkpoint_of_another_model_is_refused_and_kept(tmp_path):
    manager = _save_steps(tmp_path, [1, 2])
    wider = {"params": {"w": jnp.zeros((5, 3), jnp.float32)}, "step": jnp.int32(0)}
    with pytest.raises(UserError, match=r"parameter w has shape \(4, 3\) there and \(5, 3\)"):
        checkpoint_io.restore_latest(manager, _abstract(wider))
    assert sorted(manager.all_steps()) == [1, 2]
    assert not (tmp_path / "damaged_checkpoints").exists()


def test_truncated_config_json_is_a_user_error(tmp_path):
    config = base_config()
    checkpoint_io.write_config(str(tmp_path), config)
    path = tmp_path / "config.json"
    path.write_text(path.read_text()[:100])
    with pytest.raises(UserError, match="config.json is damaged, not valid JSON"):
        checkpoint_io.read_config(str(tmp_path))
    with pytest.raises(UserError, match="config.json is damaged"):
        checkpoint_io.config_changes(str(tmp_path), config)


def test_a_workdir_of_the_older_schema_keeps_its_moved_fields(tmp_path):
    # Workdirs written before `export` and `eval_batch_size` held their prompts
    # and evaluation batch under `eval`; they still apply when read back.
    stored = base_config().to_dict()
    del stored["export"], stored["eval_batch_size"]
    stored["eval"] = {"query_prompt": "query: ", "sts_prompt": "sts: ", "batch_size": 48, "sts_file": ""}
    (tmp_path / "config.json").write_text(json.dumps(stored))
    config = checkpoint_io.read_config(str(tmp_path))
    assert (config.export.query_prompt, config.export.sts_prompt) == ("query: ", "sts: ")
    assert config.eval_batch_size == 48
    # A current workdir's own values win over anything under `eval`.
    stored["export"] = {"query_prompt": "q: ", "sts_prompt": ""}
    (tmp_path / "config.json").write_text(json.dumps(stored))
    assert checkpoint_io.read_config(str(tmp_path)).export.to_dict() == {
        "query_prompt": "q: ",
        "sts_prompt": "",
    }


def test_no_checkpoint_means_fresh_start(tmp_path):
    manager = checkpoint_io.create_manager(str(tmp_path), keep=2, async_save=False)
    assert checkpoint_io.restore_latest(manager, _abstract(_state(0))) is None


def test_config_round_trip_and_params_for_inference(tmp_path):
    config = base_config()
    config.unlock()
    config.total_steps = 7
    config.loss.mrl_dims = (16, 8)
    checkpoint_io.write_config(str(tmp_path), config)
    _save_steps(tmp_path, [3])
    restored_config, params = checkpoint_io.restore_params(str(tmp_path))
    assert restored_config.total_steps == 7 and restored_config.loss.mrl_dims == (16, 8)
    assert isinstance(params["w"], np.ndarray)


def test_missing_workdir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a training workdir"):
        checkpoint_io.restore_params(str(tmp_path))
