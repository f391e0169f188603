"""The Matryoshka wrapper: a weighted sum of any loss over re-normalised prefixes."""

import jax.numpy as jnp
import numpy as np
import pytest

from finite_differences import check_gradient
from gecko_jax.errors import UserError
from gecko_jax.losses.gemini_nce import gemini_nce_loss
from gecko_jax.losses.matryoshka import matryoshka, resolve_dims
from losses_gemini_nce_test import numpy_gemini_nce


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_weighted_sum_over_renormalised_prefixes_of_a_pytree():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 8)), rng.normal(size=(3, 2, 8))  # [B, D] and per-token [B, L, D]
    seen = []

    def probe(embeddings, scale, *, shift):
        seen.append({k: None if v is None else np.asarray(v) for k, v in embeddings.items()})
        return scale * jnp.sum(embeddings["a"][:, 0]) + jnp.sum(embeddings["b"]) + shift

    wrapped = matryoshka(probe, dims=(8, 3), weights=(1.0, 0.25))
    got = wrapped({"a": jnp.asarray(a), "b": jnp.asarray(b), "none": None}, 2.0, shift=1.0)

    expected = 0.0
    for (dim, weight), prefixes in zip(((8, 1.0), (3, 0.25)), seen):
        pa, pb = _unit(a[:, :dim]), _unit(b[..., :dim])
        np.testing.assert_allclose(prefixes["a"], pa, rtol=1e-6)
        np.testing.assert_allclose(prefixes["b"], pb, rtol=1e-6)
        assert prefixes["none"] is None
        expected += weight * (2.0 * pa[:, 0].sum() + pb.sum() + 1.0)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_no_dims_means_the_full_normalised_embedding_with_weight_one():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 6)))
    got = matryoshka(lambda e: jnp.sum(e))(x)
    np.testing.assert_allclose(float(got), _unit(np.asarray(x)).sum(), rtol=1e-5)


@pytest.mark.parametrize(
    "dims,weights,message",
    [
        ((4,), (1.0, 1.0), "2 Matryoshka weights for 1 dims"),
        ((4, 9), None, r"Matryoshka dim 9 is outside \[1, 8\]"),
        ((0,), None, r"Matryoshka dim 0 is outside \[1, 8\]"),
    ],
)
def test_bad_dims_or_weights_are_rejected(dims, weights, message):
    with pytest.raises(UserError, match=message):
        resolve_dims(dims, weights, full_dim=8)


def test_gradient_through_prefixes_of_gemini_nce():
    rng = np.random.default_rng(2)
    shape = (2, 4, 12)
    flat = rng.normal(size=shape).ravel()
    dims, weights = (12, 4), (1.0, 0.5)

    def numpy_loss(x):
        q, p = x.reshape(shape)
        return sum(
            w * numpy_gemini_nce(_unit(q[:, :d]), _unit(p[:, :d]), None, None, 0.1)
            for d, w in zip(dims, weights)
        )

    wrapped = matryoshka(lambda e: gemini_nce_loss(e["q"], e["p"], temperature=0.1), dims, weights)

    def jax_loss(x):
        q, p = x.reshape(shape)
        return wrapped({"q": q, "p": p})

    check_gradient(jax_loss, numpy_loss, flat, seed=2)
