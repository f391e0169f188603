"""Tests for gecko_jax.models.tower and gecko_jax.models.registry."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import linen as nn

from gecko_jax.errors import UserError
from gecko_jax.models import tower as tower_lib
from gecko_jax.models.bert import BertEncoder
from gecko_jax.models.registry import build_tower

HIDDEN = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
MASK = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.int32)


def tiny_model_config(**overrides):
    config = ml_collections.ConfigDict(
        dict(
            name="bert",
            vocab_size=40,
            hidden_size=16,
            num_layers=1,
            num_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
            type_vocab_size=2,
            layer_norm_eps=1e-12,
            dropout_rate=0.1,
            attention_dropout_rate=0.1,
            pooling="mean",
            projection_dim=0,
            normalize=True,
            dtype="float32",
            init="",
            vocab="minilm",
        )
    )
    config.update(overrides)
    return config


def test_pooling():
    np.testing.assert_allclose(
        tower_lib.pool(HIDDEN, MASK, "mean"), [HIDDEN[0, :3].mean(0), HIDDEN[1, :2].mean(0)]
    )
    np.testing.assert_allclose(tower_lib.pool(HIDDEN, MASK, "cls"), HIDDEN[:, 0])
    np.testing.assert_allclose(tower_lib.pool(HIDDEN, MASK, "last"), [HIDDEN[0, 2], HIDDEN[1, 1]])
    empty = tower_lib.pool(HIDDEN, np.zeros_like(MASK), "mean")
    assert np.all(np.isfinite(empty))
    with pytest.raises(UserError, match="pooling"):
        tower_lib.pool(HIDDEN, MASK, "max")


def test_truncate_and_normalize():
    x = jnp.array([[3.0, 4.0, 12.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(tower_lib.truncate_and_normalize(x, 2), [[0.6, 0.8], [0.0, 0.0]])
    full = tower_lib.truncate_and_normalize(x, None)
    np.testing.assert_allclose(full, tower_lib.truncate_and_normalize(x, 0))
    np.testing.assert_allclose(np.linalg.norm(full, axis=-1), 1.0, rtol=1e-6)


IDS = jnp.array([[2, 7, 8, 3, 0], [2, 9, 3, 0, 0]], jnp.int32)


@pytest.fixture(scope="module")
def boxed_params():
    # Pooling, normalisation and dtype add no parameters: one init serves all.
    tower = build_tower(tiny_model_config(projection_dim=8))
    return jax.jit(tower.init)(jax.random.key(0), IDS, IDS > 0)["params"]


def test_tower_params_have_logical_axes(boxed_params):
    assert set(boxed_params) == {"backbone", "projection"}
    assert boxed_params["projection"]["kernel"].names == ("embed", "mlp")


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_tower_with_projection(boxed_params, pooling):
    tower = build_tower(tiny_model_config(pooling=pooling, projection_dim=8))
    assert isinstance(tower.backbone, BertEncoder)
    mask = (IDS > 0).astype(jnp.int32)
    out = jax.jit(tower.apply)({"params": nn.unbox(boxed_params)}, IDS, mask)
    assert out.shape == (2, 8) and out.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)


def test_tower_without_normalization_or_projection(boxed_params):
    tower = build_tower(tiny_model_config(normalize=False, dtype="bfloat16"))
    params = {"backbone": nn.unbox(boxed_params["backbone"])}
    mask = (IDS > 0).astype(jnp.int32)
    out = jax.jit(tower.apply)({"params": params}, IDS, mask)
    assert out.shape == (2, 16) and out.dtype == jnp.float32
    assert not np.allclose(np.linalg.norm(out, axis=-1), 1.0)


@pytest.mark.parametrize("field,value", [("name", "gpt"), ("pooling", "max"), ("dtype", "float16")])
def test_build_tower_rejects_unknown_choices(field, value):
    with pytest.raises(UserError, match=field):
        build_tower(tiny_model_config(**{field: value}))
