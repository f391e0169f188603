"""EmbeddingGemma's spread-out regulariser against a NumPy transcription."""

import jax.numpy as jnp
import numpy as np
import pytest

from finite_differences import check_gradient
from gecko_jax.losses.spread_out import second_moment, spread_out_loss


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def numpy_spread_out(towers):
    """Sum over towers of the mean of (x_i . x_j)^2 over ordered pairs i != j."""
    total = 0.0
    for x in towers:
        batch = len(x)
        pairs = [(x[i] @ x[j]) ** 2 for i in range(batch) for j in range(batch) if i != j]
        total += sum(pairs) / (batch * (batch - 1))
    return total


def test_matches_numpy():
    rng = np.random.default_rng(0)
    q, p = _unit(rng.normal(size=(5, 8))), _unit(rng.normal(size=(5, 8)))
    got = spread_out_loss([jnp.asarray(q), jnp.asarray(p)])
    np.testing.assert_allclose(float(got), numpy_spread_out([q, p]), rtol=1e-5)


def test_extremes_orthonormal_is_zero_and_collapsed_is_one():
    assert float(second_moment(jnp.eye(4))) == pytest.approx(0.0)
    assert float(second_moment(jnp.ones((4, 3)) / np.sqrt(3))) == pytest.approx(1.0, rel=1e-6)


def test_uniform_points_on_the_sphere_reach_one_over_d():
    # The minimiser's value: for uniform directions E[(x.y)^2] = 1/d.
    x = _unit(np.random.default_rng(1).normal(size=(512, 32)))
    assert float(second_moment(jnp.asarray(x))) == pytest.approx(1 / 32, rel=0.05)


def test_needs_two_examples():
    with pytest.raises(ValueError, match="needs 2 or more embeddings, got 1"):
        second_moment(jnp.ones((1, 4)))


def test_gradient_matches_finite_differences():
    shape = (2, 4, 6)
    flat = np.random.default_rng(2).normal(size=shape).ravel()

    def numpy_loss(x):
        return numpy_spread_out([_unit(t) for t in x.reshape(shape)])

    def jax_loss(x):
        return spread_out_loss([t / jnp.linalg.norm(t, axis=-1, keepdims=True) for t in x.reshape(shape)])

    check_gradient(jax_loss, numpy_loss, flat, seed=2)
