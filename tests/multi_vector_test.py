"""The multi-vector (XTR) tower: NumPy head, GradCache equal to the plain step, refused mixes.

GradCache on eight devices is the same code path for [B, D] and [B, L, d]
embeddings; grad_cache_test covers it.
"""

import jax
import numpy as np
import pytest

from gecko_jax.config_base import base_config
from gecko_jax.errors import UserError
from gecko_jax.losses.registry import check_tower_for_loss
from gecko_jax.models.registry import build_tower
from gecko_jax.training.grad_cache import grad_cache_value_and_grad
from gecko_jax.training.train_step import encode_batch
from grad_cache_helpers import BATCH, assert_same, plain_value_and_grad, setup  # pylint: disable=g-bad-import-order
from workdir_helpers import tiny_bert_config  # pylint: disable=g-bad-import-order

TOKEN_DIM = 8


def _setup(query_length=5, doc_length=9):
    c = tiny_bert_config(
        vocab_size=97, multi_vector_dim=TOKEN_DIM, dropout_rate=0.0, attention_dropout_rate=0.0
    )
    c.loss.name = "xtr"
    c.loss.xtr_k_train = 12
    c.loss.mrl_dims = (TOKEN_DIM, 4)
    return setup(c, {"query": query_length, "positive": doc_length, "negative": doc_length})


def _assert_same(a, b):
    assert_same(a, b, loss_rtol=1e-5, grad_rtol=1e-5)


def test_token_vectors_match_numpy_head():
    model, params, batch, _ = _setup(query_length=5, doc_length=9)
    ids, mask = batch["positive_ids"], batch["positive_mask"]
    embeddings = jax.jit(lambda p, b: encode_batch(model, p, b, deterministic=True))(params, batch)
    assert {f: e.shape for f, e in embeddings.items()} == {
        "query": (BATCH, 5, TOKEN_DIM),
        "positive": (BATCH, 9, TOKEN_DIM),
        "negative": (BATCH, 9, TOKEN_DIM),
    }
    got = np.asarray(embeddings["positive"])
    backbone = jax.jit(lambda p, i, m: model.bind({"params": p}).backbone(i, m))
    hidden = np.asarray(backbone(params, ids, mask), np.float64)
    projected = hidden @ np.asarray(params["multi_vector"]["kernel"], np.float64)
    expected = projected / np.linalg.norm(projected, axis=-1, keepdims=True) * mask[..., None]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_array_equal(got[mask == 0], 0.0)


def test_grad_cache_equals_plain_step_for_xtr():
    model, params, batch, loss_fn = _setup()
    plain = jax.jit(lambda p, b: plain_value_and_grad(model, p, b, loss_fn))(params, batch)
    cached = jax.jit(lambda p, b: grad_cache_value_and_grad(model, p, b, loss_fn, 4))(params, batch)
    _assert_same(cached, plain)


def test_mismatched_loss_and_tower_are_refused():
    with pytest.raises(UserError, match="set --config.model.multi_vector_dim"):
        check_tower_for_loss("xtr", 0)
    with pytest.raises(UserError, match="gives token vectors"):
        check_tower_for_loss("gecko", 128)
    check_tower_for_loss("xtr", 128)
    check_tower_for_loss("jasper_distill", 0)
    c = base_config()
    c.model.update(multi_vector_dim=128, projection_dim=64)
    with pytest.raises(UserError, match="set one of them to 0"):
        build_tower(c.model)
