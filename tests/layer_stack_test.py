"""`model.scan_layers`: the layers as one loop over stacked weights, equal to the unrolled tower."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from gecko_jax.errors import UserError
from gecko_jax.models import layer_stack
from gecko_jax.models.registry import build_tower
from recipe_configs import get_config


def _gemma_model(num_layers: int = 8):
    # Period 3 (two local layers, one global): 8 layers loop twice and leave 2.
    model = get_config("gecko_768", "runlocal").model
    model.num_layers = num_layers
    model.sliding_window = 8
    model.sliding_window_pattern = 3
    return model


def _bert_model():
    model = get_config("gecko_minilm").model
    model.num_layers = 3
    model.hidden_size = 64
    model.num_heads = 4
    model.intermediate_size = 128
    return model


def _tower(model, scan: bool, remat: bool = False, policy: str = "full", dropout: float = 0.0):
    model = model.copy_and_resolve_references()
    model.scan_layers = scan
    model.remat = remat
    model.remat_policy = policy
    model.dropout_rate = dropout
    return build_tower(model)


def _value_and_grad(tower, deterministic: bool):
    def loss(params, ids, mask):
        emb = tower.apply(
            {"params": params}, ids, mask, deterministic=deterministic, rngs={"dropout": jax.random.key(3)}
        )
        return jnp.sum(emb[: len(emb) // 2] * emb[len(emb) // 2 :])

    return jax.jit(jax.value_and_grad(loss))


def _batch(size: int, length: int, vocab: int):
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, length + 1, size=size)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    ids = (rng.integers(1, vocab, size=(size, length)) * mask).astype(np.int32)
    return ids, mask


def _random_params(model, ids, mask):
    abstract = jax.eval_shape(
        lambda: nn.unbox(_tower(model, False).init(jax.random.key(0), ids[:1], mask[:1])["params"])
    )
    rng = np.random.default_rng(1)
    # Random values, norm scales included, without compiling the initialisers.
    return jax.tree.map(lambda x: rng.normal(0, 0.1, x.shape).astype(np.float32), abstract)


def _assert_same(got, want):
    (loss_got, grads_got), (loss_want, grads_want) = got, want
    np.testing.assert_allclose(float(loss_got), float(loss_want), rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads_got, grads_want)


def test_period_is_the_shortest_repeat_of_the_layer_kinds():
    assert layer_stack.period_of([False] * 6) == 1
    assert layer_stack.period_of([True, True, False] * 2 + [True, True]) == 3
    assert layer_stack.period_of([True] * 5 + [False]) == 6
    assert layer_stack.period_of([]) == 1


@pytest.mark.parametrize("remat,policy", [(False, "full"), (True, "full"), (True, "dots")])
def test_scanned_gemma_equals_the_unrolled_one(remat, policy):
    # Dropout on: the loop must draw each layer's masks as the unrolled layers do.
    model = _gemma_model()
    ids, mask = _batch(8, 32, model.vocab_size)
    params = _random_params(model, ids, mask)
    want = _value_and_grad(_tower(model, False, dropout=0.1), False)(params, ids, mask)
    got = _value_and_grad(_tower(model, True, remat, policy, dropout=0.1), False)(params, ids, mask)
    _assert_same(got, want)


@pytest.mark.parametrize("remat", [False, True])
def test_scanned_bert_equals_the_unrolled_one(remat):
    model = _bert_model()
    ids, mask = _batch(8, 24, model.vocab_size)
    params = _random_params(model, ids, mask)
    want = _value_and_grad(_tower(model, False), True)(params, ids, mask)
    got = _value_and_grad(_tower(model, True, remat), True)(params, ids, mask)
    _assert_same(got, want)


def test_the_scanned_program_holds_one_period_of_layers():
    model = _gemma_model(num_layers=12)
    ids, mask = _batch(4, 32, model.vocab_size)
    params = _random_params(model, ids, mask)

    def dots(scan):
        text = _value_and_grad(_tower(model, scan), True).lower(params, ids, mask).as_text()
        return text.count("dot_general")

    unrolled, scanned = dots(False), dots(True)
    # 12 layers unrolled against one period of 3 in the loop body.
    assert scanned * 3 < unrolled, (scanned, unrolled)


def test_remat_in_the_loop_cuts_the_compiled_working_memory():
    model = _gemma_model()
    ids, mask = _batch(16, 128, model.vocab_size)
    params = _random_params(model, ids, mask)

    def temp_bytes(remat):
        step = _value_and_grad(_tower(model, True, remat), True)
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
