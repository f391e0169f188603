"""Global negatives: each loss on a batch sharded over 8 devices equals the one-device value.

Inside `jit` the losses see global arrays, so `q @ p.T` spans the whole batch
whatever the sharding; these tests pin that down for the value and for the
gradient with respect to the embeddings, loss by loss.
"""

import jax
import numpy as np
import pytest

from gecko_jax.config_base import base_config
from gecko_jax.losses.registry import build_loss
from gecko_jax.training import sharding

B, D = 16, 12


def _inputs(name):
    rng = np.random.default_rng(0)
    embeddings = {f: rng.normal(size=(B, D)).astype(np.float32) for f in ("query", "positive", "negative")}
    batch = {"has_negative": rng.integers(0, 2, size=B).astype(np.int32)}
    if name == "gemini_nce":
        batch["query_hash"] = rng.integers(0, 6, size=B).astype(np.int32)
        batch["positive_hash"] = rng.integers(0, 6, size=B).astype(np.int32)
        batch["example_id"] = np.arange(B, dtype=np.int32)
    if name == "jasper_distill":
        batch["teacher"] = rng.normal(size=(B, D)).astype(np.float32)
    return embeddings, batch


@pytest.mark.parametrize("name", ["gecko", "gemini_nce", "jasper_distill"])
def test_loss_and_gradient_on_eight_devices_equal_one(name):
    config = base_config().loss
    config.name = name
    config.mrl_dims = (12, 6)
    loss_fn = build_loss(config)
    embeddings, batch = _inputs(name)
    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))

    single = value_and_grad(embeddings, batch)
    mesh = sharding.create_mesh({"data": -1}, jax.devices())
    rows = sharding.batch_sharding(mesh)
    with mesh:
        sharded = value_and_grad(jax.device_put(embeddings, rows), jax.device_put(batch, rows))
    assert len(jax.tree.leaves(sharded[1])[0].sharding.device_set) == 8
    np.testing.assert_allclose(float(sharded[0]), float(single[0]), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), sharded[1], single[1])


def test_sharded_loss_uses_every_devices_negatives():
    """A query's loss changes when a positive held by another device changes."""
    config = base_config().loss
    loss_fn = jax.jit(build_loss(config))
    embeddings, batch = _inputs("gecko")
    mesh = sharding.create_mesh({"data": -1}, jax.devices())
    rows = sharding.batch_sharding(mesh)
    with mesh:
        before = float(loss_fn(jax.device_put(embeddings, rows), jax.device_put(batch, rows)))
        moved = dict(embeddings, positive=embeddings["positive"].copy())
        moved["positive"][-1] = embeddings["query"][0]  # Last row lives on the last device.
        after = float(loss_fn(jax.device_put(moved, rows), jax.device_put(batch, rows)))
    assert after != pytest.approx(before, rel=1e-6)
