"""Gemini Embedding's NCE loss with a false-negative mask (arXiv 2503.07891).

For query i, with s(x, y) the cosine and tau the temperature:

    L_i = -log  e^{s(q_i,p_i+)/tau} / [ e^{s(q_i,p_i+)/tau} + e^{s(q_i,p_i-)/tau}
                                        + sum_j mask(i,j) e^{s(q_i,p_j+)/tau} ]
    mask(i,j) = 0 if q_i == q_j or p_i+ == p_j+ or id_i == id_j, else 1

The positive is written explicitly in the denominator: mask(i, i) = 0, so the
in-batch sum never holds it, and copies of the equation that drop the explicit
term would leave the positive out of its own softmax. The hard-negative term
is dropped for examples without a hard negative (always the case in
pre-finetuning). Unlike Gecko there are no same-tower (query-query) terms.

Identity of texts and examples comes from the batch as integer arrays that the
data pipeline computes once per example (the registry adapter reads them):

  * `query_hash`    [B] int32: a hash of the query text (task prefix
    included); equal hashes mean the same query.
  * `positive_hash` [B] int32: a hash of the positive text.
  * `example_id`    [B] int32: the id of the source example; rows derived
    from one example (e.g. a classification example turned into several
    triples) share it.

Any of them may be absent; j = i is masked regardless. A hash collision only
drops one extra in-batch negative, which is harmless.
"""

from typing import Optional

import jax
import jax.numpy as jnp


def duplicate_mask(batch_size: int, *ids: Optional[jax.Array]) -> jax.Array:
    """True where in-batch entry (i, j) must be dropped as a false negative.

    Args:
      batch_size: B.
      *ids: [B] integer identity arrays (None entries are skipped); entries
        with equal ids in any array are dropped.

    Returns:
      [B, B] bool, True on the diagonal and wherever any ids agree.
    """
    drop = jnp.eye(batch_size, dtype=bool)
    for values in ids:
        if values is not None:
            drop |= values[:, None] == values[None, :]
    return drop


def gemini_nce_loss(
    query: jax.Array,
    positive: jax.Array,
    negative: Optional[jax.Array] = None,
    has_negative: Optional[jax.Array] = None,
    *,
    query_hash: Optional[jax.Array] = None,
    positive_hash: Optional[jax.Array] = None,
    example_id: Optional[jax.Array] = None,
    temperature: float = 0.05,
) -> jax.Array:
    """Mean NCE loss of Gemini Embedding over the batch.

    Args:
      query: [B, D] L2-normalised query embeddings.
      positive: [B, D] L2-normalised positive embeddings.
      negative: optional [B, D] L2-normalised hard negatives, one per query.
      has_negative: optional [B] 0/1; a 0 drops that query's hard-negative
        term. Ignored without `negative`.
      query_hash: optional [B] ints; equal values mark the same query text.
      positive_hash: optional [B] ints; equal values mark the same positive.
      example_id: optional [B] ints; equal values mark the same example.
      temperature: the softmax temperature tau.

    Returns:
      The scalar loss, float32.
    """
    query = query.astype(jnp.float32)
    positive = positive.astype(jnp.float32)
    batch = query.shape[0]
    in_batch = query @ positive.T / temperature  # [B, B]
    target = jnp.diagonal(in_batch)
    drop = duplicate_mask(batch, query_hash, positive_hash, example_id)
    logits = [target[:, None], jnp.where(drop, -jnp.inf, in_batch)]
    if negative is not None:
        own = jnp.sum(query * negative.astype(jnp.float32), axis=-1) / temperature
        if has_negative is not None:
            own = jnp.where(has_negative > 0, own, -jnp.inf)
        logits.append(own[:, None])
    logits = jnp.concatenate(logits, axis=1)
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - target)
