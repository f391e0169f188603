"""Tests for gecko_jax.models.bert."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from gecko_jax.errors import UserError
from gecko_jax.models.bert import BertEncoder

PARAM_AXES = {"vocab", "embed", "mlp", "heads", "kv", None}


def tiny_bert(**overrides):
    kwargs = dict(
        vocab_size=50,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
        dropout_rate=0.1,
        attention_dropout_rate=0.1,
    )
    kwargs.update(overrides)
    return BertEncoder(**kwargs)


def _apply(model, params, ids, mask, **kwargs):
    # Jitted: eager Flax dispatches every op separately and is several times
    # slower on CPU, even for a model this small.
    fn = jax.jit(model.apply, static_argnames="deterministic")
    return fn({"params": params}, ids, mask, **kwargs)


def _inputs(batch=3, length=10, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 50, size=(batch, length)).astype(np.int32)
    lengths = np.array([length, 4, 7][:batch])
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    return jnp.asarray(ids * mask), jnp.asarray(mask)


@pytest.fixture(scope="module")
def model_and_params():
    model = tiny_bert()
    ids, mask = _inputs()
    boxed = jax.jit(model.init)(jax.random.key(0), ids, mask)["params"]
    return model, boxed


def test_output_shape_and_dtype(model_and_params):
    model, boxed = model_and_params
    ids, mask = _inputs()
    out = _apply(model, nn.unbox(boxed), ids, mask)
    assert out.shape == (3, 10, 32) and out.dtype == jnp.float32
    assert np.all(np.isfinite(out))


def test_every_param_has_logical_axes(model_and_params):
    _, boxed = model_and_params
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert len(leaves) == 5 + 2 * 16
    for leaf in leaves:
        assert isinstance(leaf, nn.LogicallyPartitioned), leaf
        assert len(leaf.names) == leaf.value.ndim
        assert set(leaf.names) <= PARAM_AXES, leaf.names
        assert leaf.value.dtype == jnp.float32
    names = {
        "/".join(str(k.key) for k in path): leaf.names
        for path, leaf in jax.tree_util.tree_leaves_with_path(
            boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
        )
    }
    assert names["token_embed/embedding"] == ("vocab", "embed")
    assert names["position_embed"] == (None, "embed")
    assert names["layer_0/attention/query_kernel"] == ("embed", "heads", "kv")
    assert names["layer_1/mlp/wi/kernel"] == ("embed", "mlp")


def test_padding_does_not_change_real_tokens(model_and_params):
    model, boxed = model_and_params
    params = nn.unbox(boxed)
    ids, mask = _inputs(length=10)  # real lengths 10, 4, 7
    base = _apply(model, params, ids, mask)
    # More padding, with junk ids: padded keys are masked and never attended to.
    padded_ids = jnp.concatenate([ids, jnp.full((3, 6), 9, jnp.int32)], axis=1)
    padded_mask = jnp.concatenate([mask, jnp.zeros((3, 6), jnp.int32)], axis=1)
    long = _apply(model, params, padded_ids, padded_mask)
    for row, n in enumerate([10, 4, 7]):
        np.testing.assert_allclose(long[row, :n], base[row, :n], atol=1e-5)
    # No padding at all.
    alone = _apply(model, params, ids[1:2, :4], mask[1:2, :4])
    np.testing.assert_allclose(alone[0], base[1, :4], atol=1e-5)


def test_all_padding_row_is_finite(model_and_params):
    model, boxed = model_and_params
    ids = jnp.zeros((1, 5), jnp.int32)
    out = _apply(model, nn.unbox(boxed), ids, jnp.zeros_like(ids))
    assert np.all(np.isfinite(out))


def test_dropout_only_when_not_deterministic(model_and_params):
    model, boxed = model_and_params
    params = nn.unbox(boxed)
    ids, mask = _inputs()
    a = _apply(model, params, ids, mask)
    b = _apply(model, params, ids, mask, deterministic=True)
    np.testing.assert_array_equal(a, b)
    c = _apply(model, params, ids, mask, deterministic=False, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(a, c)
    no_dropout = tiny_bert(dropout_rate=0.0, attention_dropout_rate=0.0)
    d = _apply(no_dropout, params, ids, mask, deterministic=False, rngs={"dropout": jax.random.key(1)})
    np.testing.assert_allclose(a, d, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params(model_and_params):
    _, boxed = model_and_params
    params = nn.unbox(boxed)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    ids, mask = _inputs()
    out = _apply(tiny_bert(dtype=jnp.bfloat16), params, ids, mask)
    assert out.dtype == jnp.bfloat16
    ref = _apply(tiny_bert(), params, ids, mask)
    np.testing.assert_allclose(out.astype(jnp.float32), ref, atol=0.1)


def test_sequence_longer_than_positions_is_a_user_error(model_and_params):
    model, boxed = model_and_params
    ids = jnp.ones((1, 17), jnp.int32)
    with pytest.raises(UserError, match="max_position_embeddings"):
        _apply(model, nn.unbox(boxed), ids, ids)
