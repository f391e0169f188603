"""Parameter groups: frozen parameters stay put, multipliers scale the update."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

import pytest
from flax import linen as nn

from gecko_jax.config_base import base_config
from gecko_jax.errors import UserError
from gecko_jax.losses.loss import Loss
from gecko_jax.models.registry import build_tower
from gecko_jax.training import sharding
from gecko_jax.training.optimizers import frozen_mask, make_optimizer
from gecko_jax.training.param_groups import FROZEN, group_labels, param_path
from gecko_jax.training.train_step import (
    TrainState,
    encode_batch,
    init_train_state,
    make_train_step,
    param_shapes,
    state_shardings,
)


def _config(**optimizer):
    c = base_config()
    c.model.update(
        vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, projection_dim=8
    )
    c.optimizer.update(warmup_steps=0, decay="constant", weight_decay=0.0, grad_clip_norm=0.0, **optimizer)
    return c


def _params(config):
    model = build_tower(config.model)
    ids = jnp.ones((2, 5), jnp.int32)
    return nn.unbox(model.init(jax.random.key(0), ids, ids)["params"])


def _labels_by_path(params, **groups):
    labels = group_labels(
        params, groups.get("trainable", ()), groups.get("frozen", ()), groups.get("lr_multipliers", ())
    )
    return {param_path(k): v for k, v in jax.tree_util.tree_leaves_with_path(labels)}


def test_trainable_frozen_and_multipliers():
    params = _params(_config())
    labels = _labels_by_path(
        params,
        trainable=("projection", "layer_1/"),
        frozen=("layer_1/mlp",),
        lr_multipliers=("layer_1/=0.5",),
    )
    assert labels["projection/kernel"] == repr(1.0)
    assert all(v == FROZEN for k, v in labels.items() if "layer_0/" in k or "embed" in k)
    assert all(v == FROZEN for k, v in labels.items() if "layer_1/mlp" in k)
    assert all(v == repr(0.5) for k, v in labels.items() if "layer_1/attention/" in k)


def test_bad_patterns_are_user_errors():
    params = _params(_config())
    with pytest.raises(UserError, match="not a valid regex"):
        _labels_by_path(params, frozen=("(",))
    with pytest.raises(UserError, match="leave no parameter to train"):
        _labels_by_path(params, trainable=("nothing_matches",))
    with pytest.raises(UserError, match="REGEX=FACTOR"):
        _labels_by_path(params, lr_multipliers=("layer_1",))


def test_updates_follow_the_groups():
    config = _config(frozen=("backbone/layer_0/",), lr_multipliers=("projection=0.5",))
    params = _params(config)
    tx, _ = make_optimizer(config.optimizer, total_steps=10, params=params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    flat = {param_path(k): v for k, v in jax.tree_util.tree_leaves_with_path(updates)}
    lr = config.optimizer.learning_rate
    for path, update in flat.items():
        if path.startswith("backbone/layer_0/"):
            np.testing.assert_array_equal(update, 0.0)
        elif path.startswith("projection"):
            np.testing.assert_allclose(update, -0.5 * lr, rtol=1e-3)
        else:
            np.testing.assert_allclose(update, -lr, rtol=1e-3)


def test_grouped_optimizer_state_gets_shardings():
    config = _config(trainable=("projection",))
    model = build_tower(config.model)
    tx, _ = make_optimizer(config.optimizer, total_steps=10, params=param_shapes(model, 5))
    init = functools.partial(init_train_state, model, tx, max_length=5)
    mesh = sharding.create_mesh({"fsdp": 8}, jax.devices())
    shardings = state_shardings(jax.eval_shape(init, jax.random.key(0)), tx, mesh)
    assert all(isinstance(s, jax.sharding.NamedSharding) for s in jax.tree.leaves(shardings))
    # Frozen parameters carry no Adam moments.
    state = jax.eval_shape(tx.init, nn.unbox(jax.eval_shape(init, jax.random.key(0)).params))
    moments = [x for x in jax.tree.leaves(state) if x.ndim == 2]
    assert len(moments) == 2, "only the projection kernel should have mu and nu"


def test_logged_grad_norm_leaves_out_frozen_parameters():
    config = _config(frozen=("backbone/layer_0/",))
    config.model.update(dropout_rate=0.0, attention_dropout_rate=0.0)
    model = build_tower(config.model)
    params = _params(config)
    tx, schedule = make_optimizer(config.optimizer, total_steps=10, params=params)

    def loss_fn(embeddings, batch):
        del batch
        return jnp.sum(embeddings["query"] * jnp.arange(8.0))

    loss = Loss(loss_fn, text_fields=("query",))
    batch = {
        "query_ids": jnp.array([[1, 7, 9, 2, 0], [1, 4, 2, 0, 0]], jnp.int32),
        "query_mask": jnp.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], jnp.int32),
    }
    grads = jax.grad(
        lambda p: loss_fn(encode_batch(model, p, batch, deterministic=True, fields=("query",)), batch)
    )(params)
    flat = {param_path(k): np.asarray(g) for k, g in jax.tree_util.tree_leaves_with_path(grads)}
    trainable = [g for path, g in flat.items() if not path.startswith("backbone/layer_0/")]
    assert len(trainable) < len(flat)
    expected = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in trainable))

    step = make_train_step(model, tx, loss, schedule, frozen=frozen_mask(config.optimizer, params))
    state = TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params))
    _, metrics = jax.jit(step)(state, batch, jax.random.key(0))
    np.testing.assert_allclose(metrics["grad_norm"], expected, rtol=1e-5)
    everything = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in flat.values()))
    assert everything > expected * (1 + 1e-3)  # The frozen layer's gradients are not zero.
