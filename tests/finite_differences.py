"""Gradient checks of JAX losses against finite differences of NumPy references."""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def check_gradient(
    jax_loss: Callable[[jax.Array], jax.Array],
    numpy_loss: Callable[[np.ndarray], float],
    flat: np.ndarray,
    *,
    seed: int = 0,
    samples: int = 12,
    eps: float = 1e-5,
    rtol: float = 1e-3,
    atol: float = 1e-5,
) -> None:
    """Asserts a loss and its gradient match a NumPy reference.

    The value is compared directly, the gradient against central differences
    of the reference on sampled coordinates. The reference runs in float64,
    so its differences are exact to about eps^2; the JAX side is float32.
    Value and gradient come from one jitted call: eager dispatch would
    compile every op separately.

    Args:
      jax_loss: the loss under test, of a flat float32 vector.
      numpy_loss: an independent NumPy transcription, of a flat float64 vector.
      flat: the point at which to compare.
      seed: picks the sampled coordinates.
      samples: how many coordinates to compare.
      eps: the finite-difference step.
      rtol: relative tolerance.
      atol: absolute tolerance.
    """
    flat = np.asarray(flat, np.float64)
    value, grad = jax.jit(jax.value_and_grad(jax_loss))(jnp.asarray(flat, jnp.float32))
    np.testing.assert_allclose(float(value), numpy_loss(flat), rtol=1e-5, err_msg="value")
    grad = np.asarray(grad)
    rng = np.random.default_rng(seed)
    for index in rng.choice(flat.size, size=min(samples, flat.size), replace=False):
        bump = np.zeros_like(flat)
        bump[index] = eps
        numeric = (numpy_loss(flat + bump) - numpy_loss(flat - bump)) / (2 * eps)
        np.testing.assert_allclose(grad[index], numeric, rtol=rtol, atol=atol, err_msg=f"coordinate {index}")
