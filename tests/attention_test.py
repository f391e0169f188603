"""Fused attention (`model.attention_impl`): Splash and cuDNN against the towers' own attention.

On a CPU the kernels run emulated (`attention.emulate_fused_kernels`): Splash
in Pallas interpret mode, which runs the kernel's own program (tiling, online
softmax, block-sparse masks, segment ids, its backward kernels), and the cuDNN
path's `jax.nn.dot_product_attention` call with XLA's implementation, which
checks how masks, windows and padding are handed over but not cuDNN itself.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gecko_jax.errors import UserError
from gecko_jax.models import attention
from gecko_jax.models.registry import build_tower
from gecko_jax.training import sharding
from recipe_configs import get_config
from tower_helpers import random_params


def _reference(query, key, value, key_valid, *, scale, causal, window, softcap=0.0):
    """Attention with an explicit [B, L, L] mask, in float32."""
    length = query.shape[1]
    groups = query.shape[2] // key.shape[2]
    key, value = (jnp.repeat(t, groups, axis=2) for t in (key, value))
    scores = jnp.einsum("bqhd,bkhd->bhqk", query * scale, key, precision=jax.lax.Precision.HIGHEST)
    if softcap:
        scores = softcap * jnp.tanh(scores / softcap)
    distance = np.arange(length)[:, None] - np.arange(length)[None, :]
    allowed = np.ones((length, length), bool)
    if causal:
        allowed &= distance >= 0
    if window:
        allowed &= np.abs(distance) < window
    allowed = allowed[None] & key_valid[:, None, :].astype(bool)
    probs = jax.nn.softmax(jnp.where(allowed[:, None], scores, -1e30), axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, value, precision=jax.lax.Precision.HIGHEST)


def _operands(heads=4, kv_heads=2, length=40, head_dim=16):
    keys = jax.random.split(jax.random.key(0), 4)
    query = jax.random.normal(keys[0], (3, length, heads, head_dim))
    key = jax.random.normal(keys[1], (3, length, kv_heads, head_dim))
    value = jax.random.normal(keys[2], (3, length, kv_heads, head_dim))
    # A full text, a padded one and an all-padding one (a missing hard negative).
    key_valid = (np.arange(length)[None] < np.array([length, 23, 0])[:, None]).astype(np.int32)
    cotangent = jax.random.normal(keys[3], query.shape)
    return query, key, value, key_valid, cotangent


def _check_against_reference(impl, kv_heads, causal, window, softcap):
    query, key, value, key_valid, cotangent = _operands(kv_heads=kv_heads)
    options = dict(scale=0.25, causal=causal, window=window, softcap=softcap)
    real = key_valid.astype(bool)[:, :, None, None]

    def loss(fn, q, k, v):
        # Only real tokens' outputs are ever read; padding rows may differ.
        return jnp.sum(jnp.where(real, fn(q, k, v) * cotangent, 0.0))

    def fused(q, k, v):
        return attention.fused_attention(impl, q, k, v, key_valid, xla_attention=None, **options)

    def reference(q, k, v):
        return _reference(q, k, v, key_valid, **options)

    with attention.emulate_fused_kernels():
        out, grads = jax.jit(
            lambda *a: (fused(*a), jax.grad(lambda *b: loss(fused, *b), argnums=(0, 1, 2))(*a))
        )(query, key, value)
    want = reference(query, key, value)
    want_grads = jax.grad(lambda *b: loss(reference, *b), argnums=(0, 1, 2))(query, key, value)
    assert np.isfinite(np.asarray(out)).all()
    np.testing.assert_allclose(np.where(real, out, 0), np.where(real, want, 0), atol=2e-5)
    for got, expected in zip(grads, want_grads):
        np.testing.assert_allclose(got, expected, atol=5e-5)


@pytest.mark.parametrize(
    "kv_heads, causal, window, softcap",
    [
        (2, False, 0, 0.0),  # Bidirectional global layer, grouped-query attention.
        (1, False, 8, 5.0),  # Bidirectional local layer, multi-query, Gemma 2's soft-cap.
        (2, True, 8, 0.0),  # Causal local layer.
    ],
)
def test_splash_matches_the_reference_forward_and_backward(kv_heads, causal, window, softcap):
    _check_against_reference("splash", kv_heads, causal, window, softcap)


@pytest.mark.parametrize("causal, window", [(False, 0), (True, 0), (True, 8)])
def test_cudnn_call_matches_the_reference(causal, window):
    _check_against_reference("cudnn", 2, causal, window, 0.0)


def test_cudnn_refuses_a_bidirectional_window_shorter_than_the_text():
    query, key, value, key_valid, _ = _operands()
    with (
        attention.emulate_fused_kernels(),
        pytest.raises(
            UserError,
            match=r"cannot mask a bidirectional sliding window of 8 tokens on "
            r"40-token texts .*keep data.max_length <= 8",
        ),
    ):
        attention.fused_attention(
            "cudnn",
            query,
            key,
            value,
            key_valid,
            scale=1.0,
            causal=False,
            window=8,
            softcap=0.0,
            xla_attention=None,
        )


def _model_config(name: str, impl: str):
    if name == "gemma":
        # 3 layers: two local (window 16, shorter than the 32-token texts), one global.
        model = get_config("gecko_768", "runlocal").model
    else:
        model = get_config("gecko_minilm").model
        model.update(num_layers=2, attention_dropout_rate=0.0)
    model.update(attention_impl=impl, vocab_size=_VOCAB)
    return model


_VOCAB = 512


def _batch(size=4, length=32):
    rng = np.random.default_rng(0)
    mask = (np.arange(length)[None] < np.array([32, 20, 5, 0])[:size, None]).astype(np.int32)
    ids = (rng.integers(1, _VOCAB, size=(size, length)) * mask).astype(np.int32)
    return ids, mask


def _params(model_config, ids, mask):
    return random_params(build_tower(model_config), ids, mask)


def _embed(model_config, params, ids, mask):
    return jax.jit(lambda p: build_tower(model_config).apply({"params": p}, ids, mask))(params)


def _grads(model_config, params, ids, mask):
    tower = build_tower(model_config)

    def loss(p):
        emb = tower.apply({"params": p}, ids, mask)
        return jnp.sum(emb * jnp.arange(emb.shape[-1]))

    return jax.jit(jax.grad(loss))(params)


@pytest.mark.parametrize("name", ["gemma", "bert"])
def test_tower_with_splash_matches_xla(name):
    ids, mask = _batch()
    params = _params(_model_config(name, "xla"), ids, mask)
    emb = _embed(_model_config(name, "xla"), params, ids, mask)
    with attention.emulate_fused_kernels():
        emb_splash = _embed(_model_config(name, "splash"), params, ids, mask)
    np.testing.assert_allclose(emb_splash, emb, atol=2e-6)
    # Without the kernel's platform (a CPU), the layer falls back to the xla
    # attention, under lax.cond on each scanned layer's kind: a program that
    # rounds differently from the one-block loop of "xla".
    emb_fallback = _embed(_model_config(name, "splash"), params, ids, mask)
    np.testing.assert_allclose(emb_fallback, emb, atol=1e-6)


@pytest.mark.slow
def test_gemma_tower_with_splash_has_the_gradients_of_xla():
    # About 15 s on a shared 2-core CPU: the backward kernels compile slowly in interpret mode.
    ids, mask = _batch()
    params = _params(_model_config("gemma", "xla"), ids, mask)
    grads = _grads(_model_config("gemma", "xla"), params, ids, mask)
    with attention.emulate_fused_kernels():
        grads_splash = _grads(_model_config("gemma", "splash"), params, ids, mask)
    # Gradients reach ~10 here; float32 rounding of the differently ordered
    # sums leaves up to ~3e-5 (as between unrolled and scanned xla layers).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), grads_splash, grads)


def test_causal_gemma_tower_with_cudnn_call_runs_each_layer_kind():
    # A window of 16 within 32-token texts: scanned layers pick the local or
    # the global call under lax.cond on their kind.
    ids, mask = _batch()
    configs = {}
    for impl in ("xla", "cudnn"):
        configs[impl] = _model_config("gemma", impl)
        configs[impl].update(attention="causal", dtype="bfloat16")
    params = _params(configs["xla"], ids, mask)
    emb = _embed(configs["xla"], params, ids, mask)
    with attention.emulate_fused_kernels():
        emb_cudnn = _embed(configs["cudnn"], params, ids, mask)
    # Unit vectors; bfloat16 attention rounds differently in the two paths.
    np.testing.assert_allclose(emb_cudnn, emb, atol=2e-2)
    # Every layer global instead differs: the local layers did use their window.
    configs["cudnn"].update(sliding_window=0)
    with attention.emulate_fused_kernels():
        emb_global = _embed(configs["cudnn"], params, ids, mask)
    assert np.abs(emb_global - emb).max() > 0.05


def test_gemma_tower_with_cudnn_call_matches_xla_in_bfloat16():
    # cuDNN's windows look left only: the bidirectional tower's window is widened
    # to the 32-token texts, which makes every layer global for them.
    ids, mask = _batch()
    configs = {}
    for impl in ("xla", "cudnn"):
        configs[impl] = _model_config("gemma", impl)
        configs[impl].update(dtype="bfloat16", sliding_window=32)
    params = _params(configs["xla"], ids, mask)
    emb = _embed(configs["xla"], params, ids, mask)
    with attention.emulate_fused_kernels():
        emb_cudnn = _embed(configs["cudnn"], params, ids, mask)
    # Unit vectors; bfloat16 attention rounds differently in the two paths.
    np.testing.assert_allclose(emb_cudnn, emb, atol=2e-2)


def test_splash_runs_per_device_under_the_mesh():
    # Batch over (data, fsdp), query heads over tensor; one key/value head per device.
    ids, mask = _batch(size=4)
    model_config = _model_config("gemma", "splash")
    model_config.update(num_heads=4, num_kv_heads=1)
    tower = build_tower(model_config)
    params = _params(model_config, ids, mask)
    mesh = sharding.create_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    with attention.emulate_fused_kernels():
        single = jax.jit(lambda p: tower.apply({"params": p}, ids, mask))(params)
        with sharding.activated(mesh, sharding.preset_rules("fsdp_tp")):
            apply = jax.jit(lambda p, i, m: tower.apply({"params": p}, i, m))
            batch = [jax.device_put(x, sharding.batch_sharding(mesh)) for x in (ids, mask)]
            text = apply.lower(params, *batch).as_text()
            sharded = apply(params, *batch)
    # Each device's kernel sees its 1 of 4 rows and 2 of 4 heads.
    assert re.search(r"sdy.manual_computation|shard_map", text)
    assert "tensor<1x2x128x16xf32>" in text
    np.testing.assert_allclose(sharded, single, atol=2e-6)


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            dict(attention_impl="flash"),
            r"unknown model.attention_impl 'flash'; use one of "
            r"\('xla', 'splash', 'cudnn'\)",
        ),
        (
            dict(attention_impl="cudnn"),
            r"'cudnn' needs 16-bit compute; set "
            r"--config.model.dtype=bfloat16",
        ),
        (
            dict(attention_impl="cudnn", dtype="bfloat16", attn_logit_softcap=50.0),
            r"'cudnn' cannot soft-cap attention logits",
        ),
        (
            dict(attention_impl="cudnn", dtype="bfloat16", head_dim=260),
            r"head dimension that is a multiple of 8 and at most 256, not 260",
        ),
    ],
)
def test_gemma_configs_a_kernel_cannot_run_are_refused(changes, message):
    model_config = _model_config("gemma", "xla")
    model_config.update(**changes)
    with pytest.raises(UserError, match=message):
        build_tower(model_config)


def test_bert_attention_dropout_is_refused_with_a_kernel():
    model_config = _model_config("bert", "splash")
    model_config.attention_dropout_rate = 0.1
    with pytest.raises(
        UserError,
        match=r"'splash' has no dropout on attention probabilities; "
        r"set --config.model.attention_dropout_rate=0",
    ):
        build_tower(model_config)


@pytest.mark.skipif(
    jax.default_backend() != "gpu",
    reason="cuDNN flash attention needs an NVIDIA GPU and this host has none "
    "(tests pin JAX_PLATFORMS=cpu unless set: run JAX_PLATFORMS=cuda pytest ... "
    "on a GPU); test_cudnn_call_matches_the_reference checks the same call "
    "with XLA's implementation",
)
def test_cudnn_on_gpu_matches_xla_attention():
    query, key, value, key_valid, _ = _operands(head_dim=64)
    query, key, value = (t.astype(jnp.bfloat16) for t in (query, key, value))
    real = key_valid.astype(bool)[:, :, None, None]
    for causal, window in ((False, 0), (True, 0), (True, 8)):
        got = jax.jit(
            lambda q, k, v, c=causal, w=window: attention.fused_attention(
                "cudnn", q, k, v, key_valid, scale=0.125, causal=c, window=w, softcap=0.0, xla_attention=None
            )
        )(query, key, value)
        want = _reference(
            *(t.astype(jnp.float32) for t in (query, key, value)),
            key_valid,
            scale=0.125,
            causal=causal,
            window=window,
        )
        np.testing.assert_allclose(
            np.where(real, got.astype(np.float32), 0), np.where(real, want, 0), atol=2e-2
        )


@pytest.mark.slow
def test_splash_compiles_for_a_tpu_slice():
    # About 30 s on a shared 2-core CPU. The step of train.py, lowered and compiled by
    # XLA:TPU for a v5e:2x2 slice this host does not have (`training.tpu_topology`).
    pytest.importorskip("libtpu")
    from gecko_jax.training import aot  # pylint: disable=g-import-not-at-top
    from gecko_jax.training import tpu_topology  # pylint: disable=g-import-not-at-top

    config = get_config("gecko_768", "runlocal")
    config.mesh_shape.update(data=1, fsdp=-1)
    config.model.attention_impl = "splash"
    devices = tpu_topology.topology_devices(tpu_topology.parse_topology("v5e:2x2"))
    _, lowered = aot.lower_train_step(config, tpu_topology.create_mesh(devices, config.mesh_shape))
    text = lowered.as_text()
    # The Mosaic kernel, on each chip's 2 of the 8 rows, 4 heads, texts padded to 128.
    assert "@tpu_custom_call" in text
    assert "tensor<2x4x128x16xf32>" in text
    assert "tpu_custom_call" in lowered.compile().as_text()
