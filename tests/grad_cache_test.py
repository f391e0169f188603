"""GradCache gives the plain step's loss and gradients, on one device and on eight."""

import jax
import pytest

from gecko_jax.errors import UserError
from gecko_jax.training import sharding
from gecko_jax.training.grad_cache import check_chunk_size, grad_cache_value_and_grad
from grad_cache_helpers import assert_same, plain_value_and_grad, setup  # pylint: disable=g-bad-import-order
from workdir_helpers import tiny_bert_config  # pylint: disable=g-bad-import-order


def _setup():
    c = tiny_bert_config(vocab_size=97, projection_dim=16, dropout_rate=0.0, attention_dropout_rate=0.0)
    c.loss.mrl_dims = (16, 8)
    return setup(c, {"query": 6, "positive": 10, "negative": 10})


def _assert_same(a, b):
    assert_same(a, b, loss_rtol=1e-6, grad_rtol=1e-4)


@pytest.mark.parametrize("chunk_size", [4])
def test_grad_cache_equals_plain_step(chunk_size):
    model, params, batch, loss_fn = _setup()
    cached = jax.jit(lambda p, b: grad_cache_value_and_grad(model, p, b, loss_fn, chunk_size))(params, batch)
    plain = jax.jit(lambda p, b: plain_value_and_grad(model, p, b, loss_fn))(params, batch)
    _assert_same(cached, plain)


def test_grad_cache_on_eight_devices_equals_one():
    model, params, batch, loss_fn = _setup()
    mesh = sharding.create_mesh({"data": -1}, jax.devices())
    step = jax.jit(lambda p, b: grad_cache_value_and_grad(model, p, b, loss_fn, 8))
    with sharding.activated(mesh, sharding.LOGICAL_AXIS_RULES):
        sharded = step(params, jax.device_put(batch, sharding.batch_sharding(mesh)))
    plain = jax.jit(lambda p, b: plain_value_and_grad(model, p, b, loss_fn))(params, batch)
    _assert_same(sharded, plain)


def test_chunk_size_errors_say_what_to_do():
    with pytest.raises(UserError, match="does not divide batch_size=32"):
        check_chunk_size(5, 32, 1)
    with pytest.raises(UserError, match="multiple of the data-parallel size 8"):
        check_chunk_size(4, 32, 8)
