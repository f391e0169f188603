"""AligneR's salience gate and heads: the LP against scipy, its hard top-k limit, its gradients.

The gate solves max s^T lambda + eps H(lambda) s.t. sum(lambda) = ceil(alpha m),
0 <= lambda <= 1 by the paper's unrolled iteration (arXiv 2211.01267,
section 3); scipy solves the same convex program with a general-purpose
constrained optimiser, knowing nothing of that iteration.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize
from scipy.special import logsumexp

from finite_differences import check_gradient
from gecko_jax.errors import UserError
from gecko_jax.models import salience
from gecko_jax.models.registry import build_tower
from gecko_jax.training.train_step import encode_batch
from grad_cache_helpers import setup  # pylint: disable=g-bad-import-order
from workdir_helpers import random_params, tiny_bert_config  # pylint: disable=g-bad-import-order

_gate = jax.jit(salience.salience_gate, static_argnames=("fraction", "epsilon", "iterations"))


def scipy_gate(s, k, eps):
    """The LP's optimum by SLSQP on the primal, from a feasible uniform start."""

    def objective(lam):
        lam = np.clip(lam, 1e-300, None)
        return -(s @ lam) + eps * np.sum(lam * np.log(lam))

    def gradient(lam):
        return -s + eps * (np.log(np.clip(lam, 1e-300, None)) + 1)

    result = optimize.minimize(
        objective,
        np.full(len(s), k / len(s)),
        jac=gradient,
        method="SLSQP",
        bounds=[(1e-12, 1.0)] * len(s),
        constraints=[
            {"type": "eq", "fun": lambda lam: np.sum(lam) - k, "jac": lambda lam: np.ones_like(lam)}
        ],
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    assert result.success, result.message
    return result.x


def numpy_gate(s, mask, fraction, eps, iterations):
    """The paper's iteration, text by text, in float64."""
    out = np.zeros_like(s)
    for row, (scores, real) in enumerate(zip(s, mask > 0)):
        if not real.any():
            continue
        x = scores[real]
        k = max(math.ceil(fraction * len(x) - 1e-6), 1)
        a, b = 0.0, np.zeros_like(x)
        for _ in range(iterations):
            a = eps * np.log(k) - eps * logsumexp((x + b) / eps)
            b = np.minimum(-x - a, 0.0)
        out[row, real] = np.exp((x + b + a) / eps)
    return out


@pytest.mark.parametrize(
    "scores, fraction, eps",
    [
        ([0.9, 0.1, 0.5, 0.4, 0.0, 0.7], 0.5, 0.3),
        # Two scores far above the rest: the optimum caps them at 1.
        ([3.0, 2.9, 0.1, 0.2, 0.0, 0.15, 0.05], 0.4, 0.2),
        ([0.2, 0.3, 0.25, 0.1, 0.6, 0.55, 0.5, 0.0, 0.05], 0.5, 0.05),
    ],
    ids=["soft", "saturated", "sharp"],
)
def test_gate_solves_the_lp_like_scipy(scores, fraction, eps):
    s = np.array(scores)
    k = math.ceil(fraction * len(s))
    got = np.asarray(
        _gate(
            jnp.asarray(s[None]),
            jnp.ones((1, len(s))),
            fraction=fraction,
            epsilon=eps,
            iterations=salience.DEFAULT_ITERATIONS,
        )
    )[0]
    expected = scipy_gate(s, k, eps)
    np.testing.assert_allclose(got, expected, atol=2e-4)
    assert got.sum() == pytest.approx(k, abs=1e-3)
    assert np.all(got <= 1.0)


def test_gate_tends_to_hard_top_k_as_eps_shrinks():
    s = np.array([0.3, 0.9, 0.1, 0.6, 0.8, 0.2, 0.5])
    hard = np.isin(np.arange(7), np.argsort(-s)[:3]).astype(float)  # k = ceil(0.4 * 7) = 3
    distances = []
    for eps in (0.1, 0.03, 0.01):
        gate = np.asarray(
            _gate(jnp.asarray(s[None]), jnp.ones((1, 7)), fraction=0.4, epsilon=eps, iterations=2000)
        )[0]
        distances.append(np.abs(gate - hard).max())
    assert distances[0] > distances[1] > distances[2]
    assert distances[2] < 1e-3


def test_gate_ignores_padding_and_zeroes_empty_texts():
    rng = np.random.default_rng(0)
    s = rng.uniform(size=(3, 8))
    mask = np.array([[1] * 8, [1] * 5 + [0] * 3, [0] * 8])
    noisy = s.copy()
    noisy[mask == 0] = 9.0
    got = np.asarray(_gate(jnp.asarray(noisy), jnp.asarray(mask), fraction=0.5, epsilon=0.2, iterations=50))
    np.testing.assert_allclose(got, numpy_gate(s, mask, 0.5, 0.2, 50), atol=1e-5)
    np.testing.assert_array_equal(got[mask == 0], 0.0)
    assert got[1].sum() == pytest.approx(3, abs=1e-3)  # ceil(0.5 * 5) of the 5 real tokens.


def test_equal_scores_give_a_uniform_gate_at_once():
    got = np.asarray(
        _gate(
            jnp.full((1, 10), 0.7),
            jnp.ones((1, 10)),
            fraction=0.4,
            epsilon=salience.DEFAULT_EPSILON,
            iterations=1,
        )
    )
    np.testing.assert_allclose(got, 0.4, rtol=1e-5)


def test_gate_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    mask = np.array([[1] * 7, [1] * 4 + [0] * 3])
    weights = rng.normal(size=(2, 7))
    start = rng.uniform(size=(2, 7))

    def jax_loss(x):
        gate = salience.salience_gate(x.reshape(2, 7), jnp.asarray(mask), 0.5, 0.3, 30)
        return jnp.sum(gate * weights)

    def reference(x):
        return float(np.sum(numpy_gate(x.reshape(2, 7), mask, 0.5, 0.3, 30) * weights))

    check_gradient(jax_loss, reference, start.ravel(), samples=14, atol=1e-4)


def _salience_config(**model):
    return tiny_bert_config(
        vocab_size=97,
        multi_vector_dim=8,
        salience_heads=True,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        **model,
    )


def test_tower_appends_the_saliences_of_both_heads():
    config = _salience_config(salience_epsilon=0.5, salience_iterations=40)
    model, _, batch, _ = setup(config, {"query": 5, "positive": 9})
    params = random_params(config, seed=3)  # Random heads, not the uniform start,
    for head in params["saliences"].values():  # with most tokens above the ReLU.
        head["bias"] = np.ones_like(head["bias"])
    tokens = np.asarray(
        jax.jit(lambda p, b: encode_batch(model, p, b, deterministic=True, fields=("positive",)))(
            params, batch
        )["positive"]
    )
    assert tokens.shape == (16, 9, 8 + salience.NUM_CHANNELS)
    mask = batch["positive_mask"]
    hidden = np.asarray(
        jax.jit(lambda p, i, m: model.bind({"params": p}).backbone(i, m))(
            params, batch["positive_ids"], mask
        ),
        np.float64,
    )
    for channel, (head, fraction) in enumerate((("query_salience", 0.5), ("doc_salience", 0.4))):
        weights = params["saliences"][head]
        s = np.maximum(
            hidden @ np.asarray(weights["kernel"], np.float64)[:, 0] + float(weights["bias"][0]), 0.0
        )
        expected = numpy_gate(s, mask, fraction, 0.5, 40) * s
        np.testing.assert_allclose(tokens[..., 8 + channel], expected, atol=2e-5)
        assert np.mean(expected[mask > 0] > 0.05) > 0.5
    vectors = tokens[..., :8]
    np.testing.assert_allclose(np.linalg.norm(vectors[mask > 0], axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(tokens[mask == 0], 0.0)


def test_heads_start_uniform():
    model, params, batch, _ = setup(_salience_config(), {"positive": 6})
    tokens = np.asarray(
        jax.jit(lambda p, b: encode_batch(model, p, b, deterministic=True, fields=("positive",)))(
            params, batch
        )["positive"]
    )
    mask, lengths = batch["positive_mask"], batch["positive_mask"].sum(axis=1)
    for channel, fraction in ((8, 0.5), (9, 0.4)):
        expected = np.ceil(fraction * lengths - 1e-6) / lengths
        np.testing.assert_allclose(tokens[..., channel], expected[:, None] * mask, rtol=1e-5)


def test_salience_heads_need_a_multi_vector_tower_and_sane_fields():
    with pytest.raises(UserError, match="set --config.model.multi_vector_dim"):
        build_tower(tiny_bert_config(salience_heads=True).model)
    with pytest.raises(UserError, match="salience_doc_fraction=0.0 is out of range"):
        build_tower(_salience_config(salience_doc_fraction=0.0).model)
    with pytest.raises(UserError, match="salience_epsilon must be above 0"):
        build_tower(_salience_config(salience_epsilon=0.0).model)
