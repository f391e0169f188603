"""EmbeddingGemma's spread-out regulariser (a global orthogonal regulariser).

The formula implemented, for a batch of B unit-norm embeddings per tower:

    M2(X)  = 1 / (B (B - 1)) * sum_{i != j} (x_i . x_j)^2
    L_S    = M2(Q) + M2(P+)

i.e. the second moment of the cosine similarity between *different* inputs of
the same tower, summed over the query tower and the positive tower.

Source: EmbeddingGemma (arXiv 2509.20354, §3, "spread-out regularizer"). It
takes the Global Orthogonal Regularizer of Zhang et al., "Learning Spread-out
Local Feature Descriptors" (arXiv 1708.06320), which is
`M1^2 + max(0, M2 - 1/d)` over non-matching pairs, and keeps only the raw
second moment: no first-moment term and no 1/d threshold, summed over queries
and positives. sentence-transformers' `GlobalOrthogonalRegularizationLoss`
documents the same reading of the paper (its EmbeddingGemma setting is
`mean_weight=0`, no threshold, `aggregation="sum"`).

Why: for points spread uniformly on the unit sphere in d dimensions the mean
squared cosine of two points is 1/d, its minimum; pushing M2 down spreads the
embeddings over the sphere, which the paper reports makes them more robust to
quantisation and better suited to approximate nearest-neighbour search.

On a batch-sharded global array the sums run over the global batch.
"""

from typing import Sequence

import jax
import jax.numpy as jnp


def second_moment(embeddings: jax.Array) -> jax.Array:
    """Mean squared similarity over the ordered pairs i != j of a batch.

    Args:
      embeddings: [B, D] embeddings, B >= 2; pass them L2-normalised so the
        similarities are cosines.

    Returns:
      The scalar M2, float32.
    """
    x = embeddings.astype(jnp.float32)
    batch = x.shape[0]
    if batch < 2:
        raise ValueError(f"the spread-out regulariser needs 2 or more embeddings, got {batch}")
    gram = x @ x.T
    # Masked rather than "total minus diagonal": the unit diagonal would
    # dominate the sum and cancel away float32 precision of the small terms.
    off_diagonal = jnp.where(jnp.eye(batch, dtype=bool), 0.0, gram)
    return jnp.sum(jnp.square(off_diagonal)) / (batch * (batch - 1))


def spread_out_loss(towers: Sequence[jax.Array]) -> jax.Array:
    """EmbeddingGemma's L_S: the second moments of each tower, summed.

    Args:
      towers: [B, D] embeddings per tower; EmbeddingGemma uses (queries,
        positives). Pairs are never formed across towers.

    Returns:
      The scalar regulariser, float32.
    """
    return sum(second_moment(x) for x in towers)
