"""Gecko's fine-tuning loss (arXiv 2403.20327, its training objective) and its Matryoshka sum.

For query i the softmax denominator holds every in-batch positive p_j, every
other query q_j (same-tower negatives, j != i) and the query's own hard
negative p_i-. All similarities are cosines divided by a temperature.

The functions take global-batch arrays: inside a jitted, sharded train step
`q @ p.T` spans the whole batch, so each example sees the negatives of every
device and XLA inserts the all-gather.
"""

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from gecko_jax.losses.matryoshka import matryoshka


def gecko_loss(
    query: jax.Array,
    positive: jax.Array,
    negative: Optional[jax.Array] = None,
    negative_mask: Optional[jax.Array] = None,
    *,
    temperature: float = 0.05,
    same_tower: bool = True,
) -> jax.Array:
    """Mean in-batch softmax cross-entropy of Gecko's fine-tuning stage.

    Args:
      query: [B, D] L2-normalised query embeddings.
      positive: [B, D] L2-normalised positive embeddings.
      negative: optional [B, D] L2-normalised hard negatives, one per query.
      negative_mask: optional [B] 0/1; a 0 drops that query's hard-negative
        term (examples that have no negative).
      temperature: the softmax temperature tau.
      same_tower: include the query-query negatives (j != i).

    Returns:
      The scalar loss, float32.
    """
    query = query.astype(jnp.float32)
    positive = positive.astype(jnp.float32)
    batch = query.shape[0]
    logits = [query @ positive.T / temperature]  # [B, B]; the target is the diagonal.
    if same_tower:
        qq = query @ query.T / temperature
        logits.append(jnp.where(jnp.eye(batch, dtype=bool), -jnp.inf, qq))
    if negative is not None:
        own = jnp.sum(query * negative.astype(jnp.float32), axis=-1) / temperature
        if negative_mask is not None:
            own = jnp.where(negative_mask > 0, own, -jnp.inf)
        logits.append(own[:, None])
    logits = jnp.concatenate(logits, axis=1)
    target = jnp.diagonal(logits[:, :batch])
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - target)


def matryoshka_gecko_loss(
    query: jax.Array,
    positive: jax.Array,
    negative: Optional[jax.Array] = None,
    negative_mask: Optional[jax.Array] = None,
    *,
    dims: Sequence[int] = (),
    weights: Optional[Sequence[float]] = None,
    temperature: float = 0.05,
    same_tower: bool = True,
) -> jax.Array:
    """Weighted sum of `gecko_loss` over re-normalised embedding prefixes.

    Args:
      query, positive, negative, negative_mask: as in `gecko_loss`; the
        embeddings need not be normalised, every prefix is normalised here.
      dims: prefix sizes; empty means the full embedding only.
      weights: one weight per dim (default: all 1, as Gecko gives none).
      temperature: the softmax temperature.
      same_tower: include the query-query negatives.

    Returns:
      The scalar loss.

    Raises:
      UserError: the weights do not match the dims, or a dim exceeds D.
    """
    embeddings = {"query": query, "positive": positive, "negative": negative}

    def prefix_loss(prefixes):
        return gecko_loss(
            prefixes["query"],
            prefixes["positive"],
            prefixes["negative"],
            negative_mask,
            temperature=temperature,
            same_tower=same_tower,
        )

    return matryoshka(prefix_loss, dims, weights)(embeddings)
