"""Gradient accumulation: k accumulated steps make the update of their mean gradient."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from gecko_jax.config_base import base_config
from gecko_jax.errors import UserError
from gecko_jax.models.registry import build_tower
from gecko_jax.training import sharding
from gecko_jax.training.optimizers import make_optimizer
from gecko_jax.training.train_step import init_train_state, state_shardings
from train_step_sharding_test import logical_specs  # pylint: disable=g-bad-import-order


def _optimizer_config(accum):
    c = base_config().optimizer
    c.update(grad_accum_steps=accum, warmup_steps=2, learning_rate=0.1)
    return c


def test_two_accumulated_steps_equal_one_step_on_the_mean_gradient():
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    g1 = jax.tree.map(lambda x: jnp.sin(x + 1.0), params)
    g2 = jax.tree.map(lambda x: jnp.cos(2.0 * x), params)

    accum_tx, accum_schedule = make_optimizer(_optimizer_config(2), total_steps=8)
    state = accum_tx.init(params)
    p = params
    for g in (g1, g2):
        updates, state = accum_tx.update(g, state, p)
        p = optax.apply_updates(p, updates)

    plain_tx, plain_schedule = make_optimizer(_optimizer_config(1), total_steps=4)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
    updates, _ = plain_tx.update(mean, plain_tx.init(params), params)
    expected = optax.apply_updates(params, updates)

    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), p, expected)
    for step in range(8):
        assert float(accum_schedule(step)) == float(plain_schedule(step // 2))


def test_accumulation_state_is_sharded_like_the_parameters():
    config = base_config()
    config.model.update(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    config.optimizer.grad_accum_steps = 4
    model = build_tower(config.model)
    tx, _ = make_optimizer(config.optimizer, total_steps=8)
    init = functools.partial(init_train_state, model, tx, max_length=5)
    mesh = sharding.create_mesh({"fsdp": 8}, jax.devices())
    abstract = jax.eval_shape(init, jax.random.key(0))
    shardings = state_shardings(abstract, tx, mesh)
    accumulated = shardings.opt_state.acc_grads
    # Leaf by leaf the same shardings as the parameters, which are those their
    # logical names give: a replicated accumulator would hold a full copy of
    # the gradients on every device.
    assert jax.tree.structure(accumulated) == jax.tree.structure(shardings.params)
    expected = jax.tree.leaves(logical_specs(abstract.params), is_leaf=lambda x: isinstance(x, P))
    placed = jax.tree_util.tree_leaves_with_path(accumulated)
    assert len(placed) == len(expected) == 21
    for (path, acc), param, spec in zip(placed, jax.tree.leaves(shardings.params), expected):
        assert acc.spec == param.spec == spec, (jax.tree_util.keystr(path), acc.spec, param.spec, spec)
    # And those are split over fsdp along the hidden (`embed`) dimension.
    backbone = accumulated["backbone"]
    assert backbone["token_embed"]["embedding"].spec == P("tensor", "fsdp")
    assert backbone["layer_0"]["mlp"]["wi"]["kernel"].spec == P("fsdp", "tensor")
    assert backbone["layer_0"]["attention"]["out_kernel"].spec == P("tensor", None, "fsdp")
    # The step counters are scalars, the same on every device.
    for counter in (shardings.opt_state.mini_step, shardings.opt_state.gradient_step):
        assert counter.spec == P()


def test_accumulation_must_divide_the_run():
    with pytest.raises(UserError, match="must be >= 1 and divide total_steps=10"):
        make_optimizer(_optimizer_config(3), total_steps=10)
