"""Jasper/Stella distillation: three losses against teacher vectors (arXiv 2412.19048).

With s_x the unit student vector and t_x the unit teacher target of text x,
S and T the batch matrices, and P = B(B-1)/2 the in-batch text pairs:

    L_cosine = mean_x (1 - s_x . t_x)
    L_sim    = mean over the B x B entries of (S S^T - T T^T)^2
    L_resim  = (1/N) sum_{a<b} hinge(a, b),   N = P(P-1)/2 pairs of pairs
    L        = 10 L_cosine + 200 L_sim + 20 L_resim,   margin 0.015

where for two text pairs a, b with teacher similarities t_a > t_b the hinge is
max(0, s_b - s_a + margin): the student must order every two pairs as the
teacher does, by a margin. Ties in the teacher (only exact duplicates) give 0,
as the paper's sum over `t_i.t_j > t_m.t_n` says; the released code instead
labels a tie as one arbitrary order. Means and weights follow the released
code (NLPJCL/RAG-Retrieval `model_distill.py`).

At B = 128 there are about 33M pairs of pairs; `relative_similarity_loss`
never builds them all at once but scans over chunks of rows (see there).

Teacher targets: several teachers are each L2-normalised, concatenated, then
normalised again (`teacher_targets`), e.g. NV-Embed-v2 (4096) + stella (8192)
-> 12288. The registry adapter reads them from the batch key `teacher`
([B, T] float, the teachers' raw vectors side by side, looked up by example
id by the data pipeline) and splits it by `loss.jasper_teacher_dims`.
Normalising on every step is cheap and idempotent, so stored vectors may be
raw or already normalised.

Matryoshka prefixes (the released code's stage 3): L_cosine is taken on the
full student vector only, since a prefix cannot match the teacher's width;
L_sim and L_resim are taken on each re-normalised prefix.
"""

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gecko_jax.losses.matryoshka import matryoshka
from gecko_jax.models.tower import l2_normalize

# Weights of L_cosine, L_sim and L_resim, and the hinge margin (paper = code).
JASPER_WEIGHTS = (10.0, 200.0, 20.0)
JASPER_MARGIN = 0.015


def teacher_targets(teachers: Sequence[jax.Array]) -> jax.Array:
    """Normalises each teacher, concatenates them and normalises again.

    Args:
      teachers: [B, T_k] vectors of each teacher for the same B texts.

    Returns:
      [B, sum_k T_k] unit-norm float32 targets; each teacher contributes
      equally, whatever the scale or width of its vectors.
    """
    parts = [l2_normalize(jnp.asarray(t, jnp.float32)) for t in teachers]
    return l2_normalize(jnp.concatenate(parts, axis=-1))


def split_teachers(teacher: jax.Array, dims: Sequence[int]) -> list[jax.Array]:
    """Splits side-by-side teacher vectors into one block per teacher.

    Args:
      teacher: [B, T] vectors of all teachers, concatenated.
      dims: width of each teacher's block, in order; empty means one teacher.

    Returns:
      The [B, dims[k]] blocks.

    Raises:
      ValueError: the dims do not add up to T.
    """
    if not dims:
        return [teacher]
    if sum(dims) != teacher.shape[-1]:
        raise ValueError(
            f"teacher dims {tuple(dims)} add up to {sum(dims)}, "
            f"but the teacher vectors have {teacher.shape[-1]}"
        )
    return jnp.split(teacher, np.cumsum(dims)[:-1].tolist(), axis=-1)


def cosine_loss(student: jax.Array, teacher: jax.Array) -> jax.Array:
    """Mean of 1 - cos(student, teacher) over the batch.

    Args:
      student: [B, T] student vectors (normalised here).
      teacher: [B, T] unit teacher targets.

    Returns:
      The scalar loss, float32.
    """
    cos = jnp.sum(l2_normalize(student.astype(jnp.float32)) * teacher, axis=-1)
    return jnp.mean(1.0 - cos)


def similarity_loss(student: jax.Array, teacher: jax.Array) -> jax.Array:
    """MSE between the student's and the teacher's B x B cosine matrices.

    Args:
      student: [B, D] unit student vectors (any D).
      teacher: [B, T] unit teacher targets.

    Returns:
      The scalar loss, float32.
    """
    student = student.astype(jnp.float32)
    return jnp.mean(jnp.square(student @ student.T - teacher @ teacher.T))


def _pair_similarities(x: jax.Array) -> jax.Array:
    """The P = B(B-1)/2 cosines of distinct in-batch pairs (upper triangle)."""
    rows, cols = np.triu_indices(x.shape[0], k=1)
    return (x @ x.T)[rows, cols]


def relative_similarity_loss(
    student: jax.Array, teacher: jax.Array, *, margin: float = JASPER_MARGIN, chunk_size: int = 1024
) -> jax.Array:
    """Jasper's pair-of-pairs hinge, computed in chunks of rows.

    The hinge of two pairs is symmetric in their order (it only depends on
    which pair the teacher ranks higher), so the sum over a < b equals the sum
    over all ordered (a, b) with t_a > t_b of max(0, s_b - s_a + margin).
    That sum is taken over row chunks [chunk_size, P] under `lax.map`, and
    each chunk is recomputed in the backward pass (`jax.checkpoint`) instead
    of being stored, so both passes work on one chunk at a time: at B = 128
    (P = 8128) a chunk of 1024 rows is 8M floats, against 66M for the whole
    block.

    Args:
      student: [B, D] unit student vectors.
      teacher: [B, T] unit teacher targets.
      margin: the hinge margin.
      chunk_size: rows of the [P, P] comparison block per step.

    Returns:
      The scalar loss: the hinge sum divided by N = P(P-1)/2, float32.
    """
    s = _pair_similarities(student.astype(jnp.float32))
    t = jax.lax.stop_gradient(_pair_similarities(teacher.astype(jnp.float32)))
    pairs = s.shape[0]
    if pairs < 2:
        return jnp.zeros((), jnp.float32)
    chunk_size = min(chunk_size, pairs)
    num_chunks = -(-pairs // chunk_size)
    pad = num_chunks * chunk_size - pairs
    # A padded row has teacher similarity -inf, so it never ranks above any
    # pair and adds nothing.
    s_rows = jnp.pad(s, (0, pad)).reshape(num_chunks, chunk_size)
    t_rows = jnp.pad(t, (0, pad), constant_values=-jnp.inf).reshape(num_chunks, chunk_size)

    @jax.checkpoint
    def chunk_sum(rows):
        s_a, t_a = rows
        hinge = jax.nn.relu(s[None, :] - s_a[:, None] + margin)  # [chunk, P]
        return jnp.sum(jnp.where(t_a[:, None] > t[None, :], hinge, 0.0))

    total = jnp.sum(jax.lax.map(chunk_sum, (s_rows, t_rows)))
    return total / (pairs * (pairs - 1) / 2)


def jasper_loss(
    student: jax.Array,
    teacher: jax.Array,
    *,
    weights: Sequence[float] = JASPER_WEIGHTS,
    margin: float = JASPER_MARGIN,
    dims: Sequence[int] = (),
    dim_weights: Optional[Sequence[float]] = None,
    chunk_size: int = 1024,
) -> jax.Array:
    """Jasper's weighted sum of L_cosine, L_sim and L_resim.

    Args:
      student: [B, T] student vectors (FC1's output; normalised here).
      teacher: [B, T] unit teacher targets (see `teacher_targets`).
      weights: weights of L_cosine, L_sim and L_resim.
      margin: the L_resim hinge margin.
      dims: Matryoshka prefixes for L_sim and L_resim; empty means the full
        vector only. L_cosine always uses the full vector.
      dim_weights: one weight per prefix; None means all 1 (the released code
        averages, i.e. 1 / len(dims) each).
      chunk_size: rows per chunk of the L_resim block.

    Returns:
      The scalar loss, float32.

    Raises:
      ValueError: the weights are not three, or the student and teacher
        widths differ (L_cosine needs them equal).
    """
    if len(weights) != 3:
        raise ValueError(f"jasper weights are (cosine, sim, resim), got {tuple(weights)}")
    if student.shape != teacher.shape:
        raise ValueError(
            f"student {student.shape} and teacher {teacher.shape} differ; "
            "map the student to the teacher width (FC1) first"
        )
    w_cosine, w_sim, w_resim = weights

    def geometry_loss(prefix, target):
        return w_sim * similarity_loss(prefix, target) + w_resim * relative_similarity_loss(
            prefix, target, margin=margin, chunk_size=chunk_size
        )

    geometry = matryoshka(geometry_loss, dims, dim_weights)(student, teacher)
    return w_cosine * cosine_loss(student, teacher) + geometry
