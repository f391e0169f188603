"""The train step on a mesh of 8 simulated devices equals the one-device step."""

import functools

import jax
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import PartitionSpec as P

from gecko_jax.config_base import base_config
from gecko_jax.errors import UserError
from gecko_jax.losses.registry import build_loss
from gecko_jax.models.registry import build_tower
from gecko_jax.training import sharding
from gecko_jax.training.optimizers import make_optimizer
from gecko_jax.training.train_step import init_train_state, make_train_step, state_shardings

BATCH, LENGTH = 8, 12


def _config():
    c = base_config()
    c.model.update(
        vocab_size=101,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        projection_dim=16,
        dropout_rate=0.1,
        attention_dropout_rate=0.1,
    )
    c.loss.mrl_dims = (16, 8)
    c.optimizer.warmup_steps = 1
    c.optimizer.learning_rate = 1e-2
    return c


def _batches(num):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(num):
        batch = {}
        for field in ("query", "positive", "negative"):
            lengths = rng.integers(2, LENGTH + 1, size=BATCH)
            mask = (np.arange(LENGTH)[None] < lengths[:, None]).astype(np.int32)
            batch[f"{field}_ids"] = rng.integers(1, 101, size=(BATCH, LENGTH)).astype(np.int32) * mask
            batch[f"{field}_mask"] = mask
        batch["has_negative"] = rng.integers(0, 2, size=BATCH).astype(np.int32)
        out.append(batch)
    return out


def logical_specs(abstract_params, rules=sharding.LOGICAL_AXIS_RULES):
    """The PartitionSpec of each parameter: every dimension on the mesh axis its logical name maps to.

    Spelled out from the rules rather than through flax's `logical_to_mesh`,
    which the sharding code itself calls; for meshes whose axes divide every
    split dimension (no fallback to replication).
    """
    axis_of = dict(rules)
    return jax.tree.map(
        lambda names: P(*(axis_of[name] if name else None for name in names)),
        nn.get_partition_spec(abstract_params),
        is_leaf=lambda x: isinstance(x, P),
    )


def _run(mesh_shape, devices, batches):
    config = _config()
    mesh = sharding.create_mesh(mesh_shape, devices)
    model = build_tower(config.model)
    tx, schedule = make_optimizer(config.optimizer, total_steps=10)
    rng = jax.random.key(0)
    init = functools.partial(init_train_state, model, tx, max_length=LENGTH)
    shardings = state_shardings(jax.eval_shape(init, rng), tx, mesh)
    batch_sharding = sharding.batch_sharding(mesh)
    with sharding.activated(mesh, sharding.LOGICAL_AXIS_RULES):
        state = jax.jit(lambda r: nn.unbox(init(r)), out_shardings=shardings)(rng)
        step = jax.jit(
            make_train_step(model, tx, build_loss(config.loss), schedule),
            in_shardings=(shardings, batch_sharding, None),
            out_shardings=(shardings, None),
        )
        losses = []
        for batch in batches:
            state, metrics = step(state, jax.device_put(batch, batch_sharding), rng)
            losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.params)


@pytest.mark.parametrize("mesh_shape", [{"data": -1}, {"data": 2, "fsdp": 2, "tensor": 2}])
def test_eight_devices_equal_one(mesh_shape):
    assert len(jax.devices()) == 8, "conftest should simulate 8 CPU devices"
    batches = _batches(2)
    losses_1, params_1 = _run({"data": 1}, jax.devices()[:1], batches)
    losses_8, params_8 = _run(mesh_shape, jax.devices(), batches)
    np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), params_8, params_1)


def test_params_are_sharded_by_logical_names():
    config = _config()
    mesh = sharding.create_mesh({"fsdp": 8}, jax.devices())
    model = build_tower(config.model)
    tx, _ = make_optimizer(config.optimizer, total_steps=10)
    init = functools.partial(init_train_state, model, tx, max_length=LENGTH)
    abstract = jax.eval_shape(init, jax.random.key(0))
    shardings = state_shardings(abstract, tx, mesh)
    # Every parameter: each dimension on the mesh axis its logical name maps
    # to under the default rules (hidden size 32 and every other dimension
    # split here divide the axes, so no dimension falls back to replication).
    expected = logical_specs(abstract.params)
    assert jax.tree.structure(shardings.params) == jax.tree.structure(
        expected, is_leaf=lambda x: isinstance(x, P)
    )
    placed = jax.tree_util.tree_leaves_with_path(shardings.params)
    specs = jax.tree.leaves(expected, is_leaf=lambda x: isinstance(x, P))
    assert len(placed) == len(specs) == 38
    for (path, placement), spec in zip(placed, specs):
        assert placement.spec == spec, (jax.tree_util.keystr(path), placement.spec, spec)
    # The rules themselves, spelled out: FSDP splits the hidden dimension of
    # every matrix and vector, tensor parallelism the vocabulary, MLP and heads.
    params = shardings.params
    layer = params["backbone"]["layer_1"]
    assert params["backbone"]["token_embed"]["embedding"].spec == P("tensor", "fsdp")
    assert params["backbone"]["position_embed"].spec == P(None, "fsdp")
    assert layer["attention"]["query_kernel"].spec == P("fsdp", "tensor", None)
    assert layer["attention"]["out_kernel"].spec == P("tensor", None, "fsdp")
    assert layer["mlp"]["wi"]["kernel"].spec == P("fsdp", "tensor")
    assert layer["mlp"]["wo"]["kernel"].spec == P("tensor", "fsdp")
    assert layer["mlp_norm"]["scale"].spec == P("fsdp")
    assert params["projection"]["kernel"].spec == P("fsdp", "tensor")


def test_mesh_errors_are_clear():
    with pytest.raises(UserError, match="does not divide 8 devices"):
        sharding.create_mesh({"data": 3, "fsdp": -1}, jax.devices())
    with pytest.raises(UserError, match="unknown axes"):
        sharding.create_mesh({"model": 8}, jax.devices())
    with pytest.raises(UserError, match="needs 4 devices"):
        sharding.create_mesh({"data": 4}, jax.devices())
