"""Gemini Embedding's NCE loss against a NumPy transcription of its formula.

The formula is that of arXiv 2503.07891, as `gecko_jax/losses/gemini_nce.py` writes it out.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from finite_differences import check_gradient
from gecko_jax.losses.gemini_nce import duplicate_mask, gemini_nce_loss


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def numpy_gemini_nce(q, p, n, has_negative, tau, query_hash=None, positive_hash=None, example_id=None):
    """Loops over queries exactly as the formula reads."""

    def same(ids, i, j):
        return ids is not None and ids[i] == ids[j]

    batch = len(q)
    total = 0.0
    for i in range(batch):
        numerator = np.exp(q[i] @ p[i] / tau)
        denominator = numerator
        if n is not None and has_negative[i]:
            denominator += np.exp(q[i] @ n[i] / tau)
        for j in range(batch):
            dropped = i == j or same(query_hash, i, j) or same(positive_hash, i, j) or same(example_id, i, j)
            if not dropped:
                denominator += np.exp(q[i] @ p[j] / tau)
        total += -np.log(numerator / denominator)
    return total / batch


def _batch(seed, batch=6, dim=16):
    rng = np.random.default_rng(seed)
    return tuple(_unit(rng.normal(size=(batch, dim))) for _ in range(3))


def _jnp(x):
    return None if x is None else jnp.asarray(x)


@pytest.mark.parametrize("with_negative", [True, False])
@pytest.mark.parametrize(
    "ids",
    [
        {},
        {"query_hash": [7, 3, 7, 1, 2, 5]},
        {"positive_hash": [0, 4, 9, 4, 4, 8]},
        {"example_id": [1, 2, 3, 4, 5, 5]},
        {
            "query_hash": [7, 3, 7, 1, 2, 5],
            "positive_hash": [0, 4, 9, 4, 6, 8],
            "example_id": [1, 2, 3, 4, 5, 1],
        },
    ],
)
def test_matches_numpy(with_negative, ids):
    q, p, n = _batch(0)
    has_negative = np.array([1, 1, 0, 1, 0, 1])
    ids = {k: np.array(v) for k, v in ids.items()}
    expected = numpy_gemini_nce(q, p, n if with_negative else None, has_negative, 0.1, **ids)
    got = gemini_nce_loss(
        jnp.asarray(q),
        jnp.asarray(p),
        _jnp(n if with_negative else None),
        jnp.asarray(has_negative),
        temperature=0.1,
        **{k: jnp.asarray(v) for k, v in ids.items()},
    )
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_duplicate_mask_drops_each_kind_of_identity():
    drop = np.asarray(duplicate_mask(4, jnp.array([5, 6, 5, 7]), None, jnp.array([0, 1, 2, 1])))
    expected = np.eye(4, dtype=bool)
    expected[0, 2] = expected[2, 0] = True  # same query text
    expected[1, 3] = expected[3, 1] = True  # same example id
    np.testing.assert_array_equal(drop, expected)


def test_positive_stays_in_the_denominator_when_everything_is_masked():
    q, p, n = _batch(2)
    same_query = jnp.zeros(len(q), jnp.int32)
    # No negatives: the softmax holds the positive alone, so the loss is 0, not NaN.
    alone = gemini_nce_loss(jnp.asarray(q), jnp.asarray(p), query_hash=same_query)
    assert float(alone) == pytest.approx(0.0, abs=1e-6)
    # With hard negatives: a two-way softmax between the positive and the negative.
    got = gemini_nce_loss(
        jnp.asarray(q),
        jnp.asarray(p),
        jnp.asarray(n),
        jnp.ones(len(q)),
        query_hash=same_query,
        temperature=0.1,
    )
    pos, neg = np.sum(q * p, -1) / 0.1, np.sum(q * n, -1) / 0.1
    np.testing.assert_allclose(float(got), np.mean(np.logaddexp(pos, neg) - pos), rtol=1e-5)


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    shape = (3, 5, 8)
    flat = rng.normal(size=shape).ravel()
    has_negative = np.array([1, 0, 1, 1, 1])
    example_id = np.array([0, 1, 0, 2, 3])

    def numpy_loss(x):
        q, p, n = (_unit(v) for v in x.reshape(shape))
        return numpy_gemini_nce(q, p, n, has_negative, 0.2, example_id=example_id)

    def jax_loss(x):
        q, p, n = (v / jnp.linalg.norm(v, axis=-1, keepdims=True) for v in x.reshape(shape))
        return gemini_nce_loss(
            q, p, n, jnp.asarray(has_negative), example_id=jnp.asarray(example_id), temperature=0.2
        )

    check_gradient(jax_loss, numpy_loss, flat, seed=3)
