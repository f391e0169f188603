"""`model.scan_layers`: the layers as one loop over stacked weights, equal to the unrolled tower."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gecko_jax.errors import UserError
from gecko_jax.models import layer_stack
from gecko_jax.models.registry import build_tower
from recipe_configs import get_config
from tower_helpers import random_batch, random_params, value_and_grad


def _gemma_model(num_layers: int = 8, attention: str = "bidirectional"):
    # Layers local, local, global, ...; a window of 8 within 32-token texts,
    # and global layers' positions scaled as Gemma 3 4B+ scales them.
    model = get_config("gecko_768", "runlocal").model
    model.num_layers = num_layers
    model.sliding_window = 8
    model.sliding_window_pattern = 3
    model.rope_scaling_factor = 8.0
    model.attention = attention
    return model


def _bert_model():
    model = get_config("gecko_minilm").model
    model.num_layers = 3
    model.hidden_size = 64
    model.num_heads = 4
    model.intermediate_size = 128
    return model


def _tower(model, scan: bool, remat: bool = False, policy: str = "full", dropout: float = 0.0, impl="xla"):
    model = model.copy_and_resolve_references()
    # "splash" off a TPU falls back to XLA's attention math, with the window
    # a constant: scanned, it runs under lax.cond on each layer's kind.
    model.attention_impl = impl
    model.scan_layers = scan
    model.remat = remat
    model.remat_policy = policy
    model.dropout_rate = dropout
    return build_tower(model)


def _random_params(model, ids, mask):
    return random_params(_tower(model, False), ids, mask)


def _assert_same(got, want):
    (loss_got, grads_got), (loss_want, grads_want) = got, want
    np.testing.assert_allclose(float(loss_got), float(loss_want), rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads_got, grads_want)


def test_run_applies_each_layer_with_its_own_params_and_extra_in_order():
    def layer_fn(params, x, extra):
        return x * params["w"] + extra

    params = [{"w": jnp.float32(w)} for w in (2.0, 3.0, 5.0)]
    extras = [jnp.float32(e) for e in (1.0, 10.0, 100.0)]
    # ((1 * 2 + 1) * 3 + 10) * 5 + 100
    assert float(layer_stack.run(layer_fn, params, jnp.float32(1.0), extras, None)) == 195.0
    assert float(layer_stack.run(layer_fn, params, jnp.float32(1.0), extras, "full")) == 195.0
    assert float(layer_stack.run(layer_fn, [], jnp.float32(7.0), [], None)) == 7.0


@pytest.mark.parametrize(
    "impl,remat,policy,attention",
    [
        ("xla", False, "full", "bidirectional"),
        ("xla", True, "full", "bidirectional"),
        ("xla", True, "dots", "bidirectional"),
        ("xla", False, "full", "causal"),
        ("splash", True, "full", "bidirectional"),
        ("splash", False, "full", "causal"),
    ],
)
def test_scanned_gemma_equals_the_unrolled_one(impl, remat, policy, attention):
    # Dropout on: the loop must draw each layer's masks as the unrolled layers do.
    # 8 layers: local, local, global, local, local, global, local, local.
    model = _gemma_model(attention=attention)
    ids, mask = random_batch(8, 32, model.vocab_size)
    params = _random_params(model, ids, mask)
    want = value_and_grad(_tower(model, False, dropout=0.1), False)(params, ids, mask)
    got = value_and_grad(_tower(model, True, remat, policy, dropout=0.1, impl=impl), False)(params, ids, mask)
    _assert_same(got, want)


@pytest.mark.parametrize("remat", [False, True])
def test_scanned_bert_equals_the_unrolled_one(remat):
    model = _bert_model()
    ids, mask = random_batch(8, 24, model.vocab_size)
    params = _random_params(model, ids, mask)
    want = value_and_grad(_tower(model, False), True)(params, ids, mask)
    got = value_and_grad(_tower(model, True, remat), True)(params, ids, mask)
    _assert_same(got, want)


@pytest.mark.parametrize("impl", ["xla", "splash"])
def test_the_scanned_program_holds_one_block(impl):
    model = _gemma_model(num_layers=12)
    ids, mask = random_batch(4, 32, model.vocab_size)
    params = _random_params(model, ids, mask)

    def dots(scan):
        text = value_and_grad(_tower(model, scan, impl=impl), True).lower(params, ids, mask).as_text()
        return text.count("dot_general")

    per_layer = dots(False) / 12
    scanned = dots(True)
    # Under lax.cond a fused kernel's two kinds each hold their attention's
    # two matmuls (forward and backward): a few more than one block's.
    assert 0.8 * per_layer < scanned < 1.6 * per_layer, (scanned, per_layer)


def test_remat_in_the_loop_cuts_the_compiled_working_memory():
    model = _gemma_model()
    ids, mask = random_batch(16, 128, model.vocab_size)
    params = _random_params(model, ids, mask)

    def temp_bytes(remat):
        step = value_and_grad(_tower(model, True, remat), True)
        return step.lower(params, ids, mask).compile().memory_analysis().temp_size_in_bytes

    kept, recomputed = temp_bytes(False), temp_bytes(True)
    print(f"temporary memory: kept {kept / 2**20:.1f} MiB, recomputed {recomputed / 2**20:.1f} MiB")
    assert recomputed < 0.6 * kept


def test_bad_remat_settings_are_refused_in_one_line():
    model = _bert_model()
    model.remat = True
    with pytest.raises(UserError, match="scan_layers=True"):
        build_tower(model)
    model = _gemma_model()
    model.remat_policy = "some"
    with pytest.raises(UserError, match="remat_policy 'some'"):
        build_tower(model)
