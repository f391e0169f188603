"""GradCache gives the plain step's loss and gradients, on one device and on eight."""


import jax
import numpy as np
import pytest
from flax import linen as nn

from gecko_jax.config_base import base_config
from gecko_jax.errors import UserError
from gecko_jax.losses.registry import build_loss
from gecko_jax.models.registry import build_tower
from gecko_jax.training import sharding
from gecko_jax.training.grad_cache import check_chunk_size, grad_cache_value_and_grad
from gecko_jax.training.train_step import TEXT_FIELDS, encode_batch

BATCH = 16


def _setup():
    c = base_config()
    c.model.update(vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                   projection_dim=16, dropout_rate=0.0, attention_dropout_rate=0.0)
    c.loss.mrl_dims = (16, 8)
    model = build_tower(c.model)
    rng = np.random.default_rng(0)
    batch = {}
    for field, length in (("query", 6), ("positive", 10), ("negative", 10)):
        lengths = rng.integers(2, length + 1, size=BATCH)
        mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
        batch[f"{field}_ids"] = (rng.integers(1, 97, size=(BATCH, length)) * mask).astype(np.int32)
        batch[f"{field}_mask"] = mask
    batch["has_negative"] = rng.integers(0, 2, size=BATCH).astype(np.int32)
    params = nn.unbox(model.init(jax.random.key(1), batch["positive_ids"][:1],
                                 batch["positive_mask"][:1])["params"])
    return model, params, batch, build_loss(c.loss)


def _plain(model, params, batch, loss_fn):
    def loss(p):
        return loss_fn(encode_batch(model, p, batch, deterministic=True), batch)
    return jax.value_and_grad(loss)(params)


def _assert_same(a, b):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    np.testing.assert_allclose(float(loss_a), float(loss_b), rtol=1e-6)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6), grads_a, grads_b)


@pytest.mark.parametrize("chunk_size", [4])
def test_grad_cache_equals_plain_step(chunk_size):
    model, params, batch, loss_fn = _setup()
    cached = jax.jit(lambda p, b: grad_cache_value_and_grad(
        model, p, b, loss_fn, TEXT_FIELDS, chunk_size))(params, batch)
    _assert_same(cached, jax.jit(lambda p, b: _plain(model, p, b, loss_fn))(params, batch))


def test_grad_cache_on_eight_devices_equals_one():
    model, params, batch, loss_fn = _setup()
    mesh = sharding.create_mesh({"data": -1}, jax.devices())
    step = jax.jit(lambda p, b: grad_cache_value_and_grad(model, p, b, loss_fn, TEXT_FIELDS, 8))
    with mesh:
        sharded = step(params, jax.device_put(batch, sharding.batch_sharding(mesh)))
    _assert_same(sharded, jax.jit(lambda p, b: _plain(model, p, b, loss_fn))(params, batch))


def test_chunk_size_errors_say_what_to_do():
    with pytest.raises(UserError, match="does not divide batch_size=32"):
        check_chunk_size(5, 32, 1)
    with pytest.raises(UserError, match="multiple of the data-parallel size 8"):
        check_chunk_size(4, 32, 8)
