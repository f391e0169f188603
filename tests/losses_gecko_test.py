"""Gecko's loss against a plain NumPy transcription of its formula.

The formula is Gecko's fine-tuning objective (arXiv 2403.20327), as
`gecko_jax/losses/gecko.py` describes it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gecko_jax.errors import UserError
from gecko_jax.losses.gecko import gecko_loss, matryoshka_gecko_loss


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def numpy_gecko_loss(q, p, n, has_negative, tau, same_tower):
    """Loops over queries exactly as the formula reads."""
    batch = len(q)
    total = 0.0
    for i in range(batch):
        numerator = np.exp(q[i] @ p[i] / tau)
        denominator = 0.0
        for j in range(batch):
            denominator += np.exp(q[i] @ p[j] / tau)
            if same_tower and j != i:
                denominator += np.exp(q[i] @ q[j] / tau)
        if n is not None and has_negative[i]:
            denominator += np.exp(q[i] @ n[i] / tau)
        total += -np.log(numerator / denominator)
    return total / batch


@pytest.mark.parametrize("same_tower", [True, False])
@pytest.mark.parametrize("with_negative", [True, False])
def test_matches_numpy(same_tower, with_negative):
    rng = np.random.default_rng(0)
    q, p, n = (_unit(rng.normal(size=(6, 16))) for _ in range(3))
    has_negative = np.array([1, 1, 0, 1, 0, 1])
    tau = 0.1
    expected = numpy_gecko_loss(q, p, n if with_negative else None, has_negative, tau, same_tower)
    got = gecko_loss(
        jnp.asarray(q),
        jnp.asarray(p),
        jnp.asarray(n) if with_negative else None,
        jnp.asarray(has_negative) if with_negative else None,
        temperature=tau,
        same_tower=same_tower,
    )
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    q, p, n = (rng.normal(size=(4, 8)) for _ in range(3))
    has_negative = np.ones(4)

    def numpy_loss(flat):
        qq, pp, nn_ = (_unit(x) for x in flat.reshape(3, 4, 8))
        return numpy_gecko_loss(qq, pp, nn_, has_negative, 0.2, True)

    def jax_loss(flat):
        qq, pp, nn_ = (x / jnp.linalg.norm(x, axis=-1, keepdims=True) for x in flat.reshape(3, 4, 8))
        return gecko_loss(qq, pp, nn_, jnp.asarray(has_negative), temperature=0.2)

    flat = np.concatenate([q, p, n]).ravel()
    grad = np.asarray(jax.grad(jax_loss)(jnp.asarray(flat, jnp.float32)))
    eps = 1e-5
    for index in rng.choice(flat.size, size=12, replace=False):
        bump = np.zeros_like(flat)
        bump[index] = eps
        numeric = (numpy_loss(flat + bump) - numpy_loss(flat - bump)) / (2 * eps)
        np.testing.assert_allclose(grad[index], numeric, rtol=1e-3, atol=1e-5)


def test_matryoshka_is_weighted_sum_over_renormalised_prefixes():
    rng = np.random.default_rng(2)
    q, p, n = (rng.normal(size=(5, 12)) for _ in range(3))
    has_negative = np.ones(5)
    expected = 0.0
    for dim, weight in ((12, 1.0), (4, 0.5)):
        expected += weight * numpy_gecko_loss(
            _unit(q[:, :dim]), _unit(p[:, :dim]), _unit(n[:, :dim]), has_negative, 0.05, True
        )
    got = matryoshka_gecko_loss(
        jnp.asarray(q),
        jnp.asarray(p),
        jnp.asarray(n),
        jnp.asarray(has_negative),
        dims=(12, 4),
        weights=(1.0, 0.5),
        temperature=0.05,
    )
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_matryoshka_rejects_mismatched_weights():
    x = jnp.ones((2, 4))
    with pytest.raises(UserError, match="2 Matryoshka weights for 1 dims"):
        matryoshka_gecko_loss(x, x, dims=(4,), weights=(1.0, 1.0))
