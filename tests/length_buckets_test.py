"""A step on a batch cut to its length bucket equals the step on the batch padded to max_length.

`data.bucket_lengths` only drops padding columns, so every loss must give the
same value and gradients either way; this holds the pooled (Gecko) and the
multi-vector (XTR) towers to it.
"""

import jax
import pytest

from grad_cache_helpers import assert_same, plain_value_and_grad, setup  # pylint: disable=g-bad-import-order
from workdir_helpers import tiny_bert_config  # pylint: disable=g-bad-import-order

PADDED = {"query": 24, "positive": 40, "negative": 40}
CUT = {"query": 8, "positive": 16, "negative": 16}


def _gecko():
    c = tiny_bert_config(vocab_size=97, projection_dim=16, dropout_rate=0.0, attention_dropout_rate=0.0)
    c.loss.mrl_dims = (16, 8)
    return c


def _xtr():
    c = tiny_bert_config(vocab_size=97, multi_vector_dim=8, dropout_rate=0.0, attention_dropout_rate=0.0)
    c.loss.name = "xtr"
    c.loss.xtr_k_train = 12
    return c


@pytest.mark.parametrize("make_config", [_gecko, _xtr], ids=["gecko", "xtr"])
def test_cutting_padding_keeps_loss_and_gradients(make_config):
    model, params, cut, loss_fn = setup(make_config(), CUT)
    padded = dict(cut)
    for field, length in PADDED.items():
        extra = length - CUT[field]
        for suffix, value in (("ids", 0), ("mask", 0)):
            key = f"{field}_{suffix}"
            padded[key] = jax.numpy.pad(cut[key], ((0, 0), (0, extra)), constant_values=value)
    step = jax.jit(lambda p, b: plain_value_and_grad(model, p, b, loss_fn))
    assert_same(step(params, cut), step(params, padded), loss_rtol=1e-5, grad_rtol=1e-4)
