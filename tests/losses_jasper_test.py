"""Jasper's three distillation losses against NumPy transcriptions of the paper's formulas.

The formulas are those of arXiv 2412.19048, as `gecko_jax/losses/jasper.py` writes them out.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from finite_differences import check_gradient
from gecko_jax.losses import jasper


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# Compiled once per shape: eager dispatch would compile every op separately.
_resim = jax.jit(jasper.relative_similarity_loss, static_argnames=("margin", "chunk_size"))
_total = jax.jit(jasper.jasper_loss, static_argnames=("dims", "dim_weights", "chunk_size"))


def numpy_cosine(s, t):
    return np.mean(1.0 - np.sum(_unit(s) * t, axis=-1))


def numpy_similarity(s, t):
    return np.mean((s @ s.T - t @ t.T) ** 2)


def numpy_resim_paper(s, t, margin):
    """(1/N) sum over pairs of pairs with t_ij > t_mn of max(0, s_mn - s_ij + margin)."""
    pairs = list(itertools.combinations(range(len(s)), 2))
    s_pair = [s[i] @ s[j] for i, j in pairs]
    t_pair = [t[i] @ t[j] for i, j in pairs]
    total = 0.0
    for a, b in itertools.permutations(range(len(pairs)), 2):
        if t_pair[a] > t_pair[b]:
            total += max(0.0, s_pair[b] - s_pair[a] + margin)
    return total / (len(pairs) * (len(pairs) - 1) / 2)


def numpy_resim_released_code(s, t, margin):
    """The released code's vectorised form: a sign label per upper-triangle pair of pairs."""

    def score_diff(x):
        scores = (x @ x.T)[np.triu_indices(len(x), k=1)]
        diff = scores[None, :] - scores[:, None]
        return diff[np.triu_indices(len(scores), k=1)]

    label = np.where(score_diff(t) < 0, 1.0, -1.0)
    return np.mean(np.maximum(score_diff(s) * label + margin, 0.0))


def _student_teacher(seed, batch=7, dim=6):
    rng = np.random.default_rng(seed)
    return _unit(rng.normal(size=(batch, dim))), _unit(rng.normal(size=(batch, dim)))


def test_teacher_targets_normalise_each_then_the_concatenation():
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=(3, 4)) * 100.0, rng.normal(size=(3, 6))
    got = np.asarray(jasper.teacher_targets([jnp.asarray(small), jnp.asarray(large)]))
    expected = _unit(np.concatenate([_unit(small), _unit(large)], axis=-1))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Each teacher weighs the same, whatever its scale or width.
    np.testing.assert_allclose(np.linalg.norm(got[:, :4], axis=-1), np.sqrt(0.5), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got[:, 4:], axis=-1), np.sqrt(0.5), rtol=1e-5)
    blocks = jasper.split_teachers(jnp.concatenate([small, large], axis=-1), (4, 6))
    np.testing.assert_allclose(np.asarray(jasper.teacher_targets(blocks)), expected, rtol=1e-5)


def test_split_teachers_checks_the_widths():
    with pytest.raises(ValueError, match=r"teacher dims \(4, 4\) add up to 8, but .* have 10"):
        jasper.split_teachers(jnp.ones((2, 10)), (4, 4))
    assert len(jasper.split_teachers(jnp.ones((2, 10)), ())) == 1


def test_cosine_and_similarity_match_numpy():
    s, t = _student_teacher(1)
    raw = s * 3.0  # the cosine loss normalises the student itself
    np.testing.assert_allclose(
        float(jasper.cosine_loss(jnp.asarray(raw), jnp.asarray(t))), numpy_cosine(raw, t), rtol=1e-5
    )
    np.testing.assert_allclose(
        float(jasper.similarity_loss(jnp.asarray(s), jnp.asarray(t))), numpy_similarity(s, t), rtol=1e-5
    )


@pytest.mark.parametrize("chunk_size", [1, 4, 21, 1024])
def test_chunked_hinge_matches_the_paper_sum_and_the_released_code(chunk_size):
    s, t = _student_teacher(2)  # B = 7: P = 21 pairs, 210 pairs of pairs
    margin = 0.05  # large enough that many terms are active
    got = float(_resim(jnp.asarray(s), jnp.asarray(t), margin=margin, chunk_size=chunk_size))
    np.testing.assert_allclose(got, numpy_resim_paper(s, t, margin), rtol=1e-5)
    np.testing.assert_allclose(got, numpy_resim_released_code(s, t, margin), rtol=1e-5)


def test_teacher_ties_add_nothing():
    s, t = _student_teacher(3, batch=5)
    t[3] = t[1]  # a duplicate text: pairs (1, k) and (3, k) tie in the teacher
    got = float(_resim(jnp.asarray(s), jnp.asarray(t), margin=0.05, chunk_size=3))
    np.testing.assert_allclose(got, numpy_resim_paper(s, t, 0.05), rtol=1e-5)


def test_total_uses_the_full_vector_for_cosine_and_prefixes_for_the_rest():
    rng = np.random.default_rng(4)
    student, t = rng.normal(size=(6, 8)), _unit(rng.normal(size=(6, 8)))
    dims, dim_weights = (8, 4), (0.5, 0.5)
    got = _total(jnp.asarray(student), jnp.asarray(t), dims=dims, dim_weights=dim_weights, chunk_size=5)
    expected = 10 * numpy_cosine(student, t)
    for dim, weight in zip(dims, dim_weights):
        prefix = _unit(student[:, :dim])
        expected += weight * (200 * numpy_similarity(prefix, t) + 20 * numpy_resim_paper(prefix, t, 0.015))
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_rejects_a_student_narrower_than_the_teacher():
    with pytest.raises(ValueError, match="map the student to the teacher width"):
        jasper.jasper_loss(jnp.ones((3, 4)), jnp.ones((3, 8)))


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    student, t = rng.normal(size=(5, 6)), _unit(rng.normal(size=(5, 6)))
    margin = 0.1

    def numpy_loss(x):
        full = x.reshape(student.shape)
        prefix = _unit(full[:, :3])
        return (
            10 * numpy_cosine(full, t)
            + 200 * numpy_similarity(_unit(full), t)
            + 20 * numpy_resim_paper(_unit(full), t, margin)
            + 200 * numpy_similarity(prefix, t)
            + 20 * numpy_resim_paper(prefix, t, margin)
        )

    def jax_loss(x):
        return jasper.jasper_loss(
            x.reshape(student.shape), jnp.asarray(t, jnp.float32), margin=margin, dims=(6, 3), chunk_size=4
        )

    check_gradient(jax_loss, numpy_loss, student.ravel(), seed=5, rtol=2e-3)


def test_batch_128_hinge_fits_in_a_bounded_working_set():
    # 8128 pairs give 66M ordered pairs of pairs; one unchunked [P, P] float
    # block alone is 252 MiB. Chunked, the whole value-and-gradient stays small.
    rng = np.random.default_rng(6)
    s, t = (jnp.asarray(_unit(rng.normal(size=(128, 32))), jnp.float32) for _ in range(2))
    step = jax.jit(jax.value_and_grad(lambda x: jasper.relative_similarity_loss(x, t, chunk_size=1024)))
    memory = step.lower(s).compile().memory_analysis()
    assert memory.temp_size_in_bytes < 100 * 2**20
