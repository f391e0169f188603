"""XTR's in-batch token-retrieval loss (arXiv 2304.01982) against a NumPy transcription of it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from finite_differences import check_gradient
from gecko_jax.losses.xtr import xtr_loss, xtr_scores


def numpy_xtr_scores(q, q_mask, docs, doc_mask, k_train):
    """f_XTR with the alignment built token by token, as the paper defines it."""
    num_queries, num_docs = len(q), len(docs)
    batch_tokens = [(b, j) for b in range(num_docs) for j in range(docs.shape[1]) if doc_mask[b, j]]
    scores = np.zeros((num_queries, num_docs))
    for a in range(num_queries):
        tokens = [i for i in range(q.shape[1]) if q_mask[a, i]]
        retrieved = {}
        for i in tokens:
            sims = sorted((q[a, i] @ docs[b, j] for b, j in batch_tokens), reverse=True)
            threshold = sims[min(k_train, len(sims)) - 1]
            retrieved[i] = {(b, j) for b, j in batch_tokens if q[a, i] @ docs[b, j] >= threshold}
        for b in range(num_docs):
            real = [j for j in range(docs.shape[1]) if doc_mask[b, j]]
            if not real:
                continue
            numerator, z = 0.0, 0
            for i in tokens:
                aligned = [q[a, i] @ docs[b, j] if (b, j) in retrieved[i] else 0.0 for j in real]
                numerator += max(aligned)
                z += any((b, j) in retrieved[i] for j in real)
            scores[a, b] = numerator / z if z else 0.0
    return scores


def numpy_xtr_loss(q, q_mask, p, p_mask, n, n_mask, has_negative, k_train):
    batch = len(q)
    docs = np.concatenate([p, n])
    doc_mask = np.concatenate([p_mask, n_mask * has_negative[:, None]])
    scores = numpy_xtr_scores(q, q_mask, docs, doc_mask, k_train)
    valid = np.concatenate([np.ones(batch, bool), has_negative > 0])
    total = 0.0
    for a in range(batch):
        logits = scores[a][valid]
        total += np.log(np.sum(np.exp(logits))) - scores[a, a]
    return total / batch


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _mask(lengths, width):
    return (np.arange(width)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)


def _example(seed, batch=3, n=4, m=5, dim=6):
    rng = np.random.default_rng(seed)
    q, p, neg = (_unit(rng.normal(size=(batch, width, dim))) for width in (n, m, m))
    q_mask = _mask(rng.integers(1, n + 1, size=batch), n)
    p_mask = _mask(rng.integers(1, m + 1, size=batch), m)
    n_mask = _mask(rng.integers(1, m + 1, size=batch), m)
    has_negative = np.array([1, 0, 1][:batch])
    return q, q_mask, p, p_mask, neg, n_mask, has_negative


# Compiled once per shape: eager dispatch would compile every op separately.
_jit_xtr_loss = jax.jit(xtr_loss, static_argnames="k_train")
_jit_xtr_scores = jax.jit(xtr_scores, static_argnames="k_train")


@pytest.mark.parametrize("k_train", [1, 4, 1000])
def test_matches_numpy(k_train):
    example = _example(0)
    got = _jit_xtr_loss(*(jnp.asarray(x) for x in example), k_train=k_train)
    np.testing.assert_allclose(float(got), numpy_xtr_loss(*example, k_train), rtol=1e-5)


def test_padding_content_does_not_matter():
    q, q_mask, p, p_mask, neg, n_mask, has_negative = _example(1)
    noisy = [x.copy() for x in (q, p, neg)]
    for x, mask in zip(noisy, (q_mask, p_mask, n_mask)):
        x[mask == 0] = 5.0  # would dominate every top-k if it were not masked
    noisy[2][has_negative == 0] = 5.0  # a missing hard negative is all padding
    clean = _jit_xtr_loss(
        *(jnp.asarray(x) for x in (q, q_mask, p, p_mask, neg, n_mask, has_negative)), k_train=3
    )
    dirty = _jit_xtr_loss(
        *(jnp.asarray(x) for x in (noisy[0], q_mask, noisy[1], p_mask, noisy[2], n_mask, has_negative)),
        k_train=3,
    )
    np.testing.assert_allclose(float(dirty), float(clean), rtol=1e-6)


def test_top_k_is_per_query_token_and_z_counts_retrieving_tokens():
    # Two documents of two tokens; k_train = 1. Query token 0 retrieves doc 0's
    # token 0 (0.9), query token 1 retrieves doc 1's token 1 (0.8). A single
    # top-1 over the query's flattened block would keep only the 0.9.
    e = np.eye(4)
    q = np.array([[e[0], e[1]]])
    docs = np.array(
        [
            [e[0] * 0.9 + e[2] * np.sqrt(1 - 0.81), e[1] * 0.5 + e[3] * np.sqrt(0.75)],
            [e[3], e[1] * 0.8 + e[2] * 0.6],
        ]
    )
    ones = np.ones((1, 2)), np.ones((2, 2))
    scores = np.asarray(
        _jit_xtr_scores(
            jnp.asarray(q), jnp.asarray(ones[0]), jnp.asarray(docs), jnp.asarray(ones[1]), k_train=1
        )
    )
    # Each document was reached by one query token: Z = 1, not n = 2.
    np.testing.assert_allclose(scores, [[0.9, 0.8]], rtol=1e-6)
    np.testing.assert_allclose(scores, numpy_xtr_scores(q, ones[0], docs, ones[1], 1), rtol=1e-6)


def test_a_never_retrieved_document_scores_zero():
    e = np.eye(3)
    q = np.array([[e[0]]])
    docs = np.array([[e[0]], [e[1]]])  # doc 1 is orthogonal and loses the top-1
    scores = _jit_xtr_scores(jnp.asarray(q), jnp.ones((1, 1)), jnp.asarray(docs), jnp.ones((2, 1)), k_train=1)
    np.testing.assert_allclose(np.asarray(scores), [[1.0, 0.0]], atol=1e-7)


def test_gradient_matches_finite_differences():
    q, q_mask, p, p_mask, neg, n_mask, has_negative = _example(2)
    shapes = [q.shape, p.shape, neg.shape]
    sizes = np.cumsum([np.prod(s) for s in shapes])[:-1]
    flat = np.concatenate([q.ravel(), p.ravel(), neg.ravel()])

    def split(x, xp):
        return [part.reshape(shape) for part, shape in zip(xp.split(x, sizes), shapes)]

    def numpy_loss(x):
        qq, pp, nn_ = split(x, np)
        return numpy_xtr_loss(qq, q_mask, pp, p_mask, nn_, n_mask, has_negative, 4)

    def jax_loss(x):
        qq, pp, nn_ = split(x, jnp)
        return xtr_loss(
            qq,
            jnp.asarray(q_mask),
            pp,
            jnp.asarray(p_mask),
            nn_,
            jnp.asarray(n_mask),
            jnp.asarray(has_negative),
            k_train=4,
        )

    check_gradient(jax_loss, numpy_loss, flat, seed=2, samples=16)
