"""Tests for gecko_jax.models.gemma on tiny random models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from flax.core import meta

from gecko_jax.config_base import base_config
from gecko_jax.errors import UserError
from gecko_jax.models.gemma import Gemma, GemmaConfig, init_cache
from gecko_jax.models.registry import build_tower

AXIS_NAMES = {"vocab", "embed", "mlp", "heads", "kv"}


def tiny_config(**overrides) -> GemmaConfig:
    fields = dict(
        vocab_size=64,
        hidden_size=16,
        num_layers=3,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        intermediate_size=32,
        version=3,
        sliding_window=3,
        sliding_window_pattern=3,
        rope_global_base=1e6,
        rope_local_base=1e4,
    )
    fields.update(overrides)
    return GemmaConfig(**fields)


def init_boxed(config: GemmaConfig, seed: int = 0):
    """Random parameters (boxed with their axis names) without compiling init.

    Compiling the random initialisers takes ~10 s on CPU; numpy draws the
    same shapes at once. Norm scales are random too, to exercise (1 + w).
    """
    ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    shapes = jax.eval_shape(Gemma(config).init, jax.random.key(0), ids, ids)
    rng = np.random.RandomState(seed)
    return jax.tree.map(lambda x: rng.normal(0.0, 0.3, x.shape).astype(np.float32), shapes["params"])


def init(config: GemmaConfig, seed: int = 0):
    return meta.unbox(init_boxed(config, seed))


def forward(config: GemmaConfig):
    """A jitted full forward pass (eager op-by-op runs are slow on CPU)."""
    return jax.jit(lambda p, ids, mask: Gemma(config).apply({"params": p}, ids, mask))


def random_ids(shape, seed=0, vocab=64):
    return np.random.RandomState(seed).randint(4, vocab, size=shape).astype(np.int32)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_every_param_has_logical_axes(version):
    params = init_boxed(tiny_config(version=version, attn_logit_softcap=50.0 if version == 2 else 0.0))
    flat = traverse_util.flatten_dict(params)
    for key, leaf in flat.items():
        assert isinstance(leaf, meta.Partitioned), "/".join(key)
        assert set(leaf.names) <= AXIS_NAMES, ("/".join(key), leaf.names)
        assert len(leaf.names) == leaf.value.ndim
    names = {"/".join(k[:-1]) for k in flat}
    assert ("layers_0/post_attention_norm" in names) == (version >= 2)
    assert ("layers_0/attention/q_norm" in names) == (version == 3)


def test_causal_ignores_future_and_bidirectional_does_not():
    ids = random_ids((1, 8))
    changed = ids.copy()
    changed[0, 6] = (ids[0, 6] + 1) % 60 + 4
    mask = np.ones_like(ids)
    for attention, same_prefix in (("causal", True), ("bidirectional", False)):
        config = tiny_config(attention=attention)
        params = init(config)
        run = forward(config)
        a, b = run(params, ids, mask), run(params, changed, mask)
        assert np.allclose(a[:, :6], b[:, :6], atol=1e-6) == same_prefix, attention


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_padding_does_not_change_real_tokens(attention):
    config = tiny_config(attention=attention)
    params = init(config)
    ids = random_ids((1, 5))
    padded = np.concatenate([ids, np.zeros((1, 4), np.int32)], axis=1)
    mask = np.array([[1] * 5 + [0] * 4], np.int32)
    run = forward(config)
    short, long = run(params, ids, np.ones_like(ids)), run(params, padded, mask)
    np.testing.assert_allclose(short, long[:, :5], atol=1e-5)


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_local_layers_see_only_the_window(attention):
    # Every layer local with a window of 2: one layer lets a token see its
    # neighbours only (a distance of 1).
    config = tiny_config(attention=attention, num_layers=1, sliding_window=2, sliding_window_pattern=1000)
    params = init(config)
    ids = random_ids((1, 8))
    changed = ids.copy()
    changed[0, 4] = (ids[0, 4] + 1) % 60 + 4
    run = forward(config)
    a = run(params, ids, np.ones_like(ids))
    b = run(params, changed, np.ones_like(ids))
    moved = np.abs(np.asarray(a - b)).max(-1)[0] > 1e-6
    expected = [False] * 8
    for position in (3, 4, 5) if attention == "bidirectional" else (4, 5):
        expected[position] = True
    assert moved.tolist() == expected


@pytest.mark.parametrize("version", [1, 2, 3])
def test_cached_decoding_equals_full_forward(version):
    config = tiny_config(
        version=version,
        attn_logit_softcap=(50.0 if version == 2 else 0.0),
        final_logit_softcap=(30.0 if version == 2 else 0.0),
    )
    model = Gemma(config)
    params = init(config)
    # Row 1 is left-padded by 2: slots differ from positions.
    ids = random_ids((2, 9))
    mask = np.ones_like(ids)
    mask[1, :2] = 0
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    decode = jax.jit(lambda *args: model.apply({"params": params}, *args, method=Gemma.decode))
    full, _ = decode(ids, mask, positions)
    cache = init_cache(config, 2, 12)
    prompt = 5
    hidden, cache = decode(ids[:, :prompt], mask[:, :prompt], positions[:, :prompt], cache, 0)
    steps = [hidden]
    for t in range(prompt, ids.shape[1]):
        hidden, cache = decode(ids[:, t : t + 1], mask[:, t : t + 1], positions[:, t : t + 1], cache, t)
        steps.append(hidden)
    incremental = np.concatenate(steps, axis=1)
    np.testing.assert_allclose(incremental[0], full[0], atol=1e-5)
    np.testing.assert_allclose(incremental[1, 2:], full[1, 2:], atol=1e-5)
    logits = model.apply({"params": params}, full, method=Gemma.logits)
    assert logits.shape == (2, 9, 64) and logits.dtype == jnp.float32
    if version == 2:
        assert np.abs(np.asarray(logits)).max() <= 30.0


def test_config_errors():
    with pytest.raises(UserError, match="version"):
        tiny_config(version=4)
    with pytest.raises(UserError, match="num_kv_heads"):
        tiny_config(num_kv_heads=3)
    with pytest.raises(UserError, match="attention"):
        tiny_config(attention="sideways")


def test_gemma_tower_from_config():
    config = base_config()
    with config.unlocked():
        config.model.update(
            name="gemma",
            vocab_size=64,
            hidden_size=16,
            num_layers=2,
            num_heads=2,
            num_kv_heads=1,
            head_dim=8,
            intermediate_size=32,
            layer_norm_eps=1e-6,
            dropout_rate=0.0,
            sliding_window=4,
            sliding_window_pattern=2,
            projection_dim=12,
            dtype="bfloat16",
        )
    tower = build_tower(config.model)
    ids = jnp.asarray(random_ids((3, 7)))
    mask = jnp.ones_like(ids).at[1, 4:].set(0)
    shapes = jax.eval_shape(tower.init, jax.random.key(0), ids, mask)["params"]
    params = jax.tree.map(lambda x: np.full(x.shape, 0.1, np.float32), meta.unbox(shapes))
    out = jax.jit(tower.apply)({"params": params}, ids, mask)
    assert out.shape == (3, 12) and out.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)
