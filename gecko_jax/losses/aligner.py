"""AligneR's sparse-alignment score and its contrastive loss (arXiv 2211.01267, section 3).

AligneR casts multi-vector retrieval as a sparse alignment A between the n
query and m document tokens:

    S_ij      = q_i . d_j                      (unit token vectors)
    A         = Ã ⊙ (u^q ⊗ u^d)
    sim(Q, D) = sum_ij S_ij A_ij / sum_ij A_ij

The pairwise alignment Ã is a selection made row by row from S, over the
document's real tokens (`losses.alignment`): `topk:K` aligns each query token
to its K most similar document tokens (all of them when the document has
fewer; K = 1, `top1`, is ColBERT's MaxSim), `topp:P` to max(floor(P% * m), 1)
of them, a number that grows with the document. The unary saliences u^q, u^d
(`models.salience`) weigh tokens; with uniform saliences and top1, sim is
ColBERT's mean over query tokens of the best similarity. Padding is never aligned and padded query
tokens weigh nothing. A document without real tokens, or one whose aligned
weights are all zero, scores 0.

Ties at a row's threshold align every tied token, so a row may align more than
K tokens when similarities are equal. Ã is a selection and carries no
gradient; gradients reach the similarities S_ij and both saliences.

The loss is the softmax cross-entropy of sim / temperature over the batch's
documents (every positive and every present hard negative), as the paper
trains it with top1 alignment. Memory: the [Q, n, N, m] similarity block is
materialised, as in `losses.xtr`.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from gecko_jax.losses.alignment import TOP1, Alignment


def _topp_counts(percent: float, doc_lengths: jax.Array) -> jax.Array:
    """int32 [N]: max(floor(percent% * m), 1) for documents of [N] lengths m.

    Counted in integers, in thousandths of a percent: float32 makes 7.2% of
    375 tokens 26.999998, which would floor to 26. int32 holds the product
    for documents of up to 21,474 tokens.
    """
    milli_percent = round(percent * 1000)
    aligned = (milli_percent * doc_lengths.astype(jnp.int32)) // 100_000
    return jnp.maximum(aligned, 1).astype(jnp.int32)


def aligned_tokens(sims: jax.Array, doc_mask: jax.Array, alignment: Alignment) -> jax.Array:
    """Ã: which document tokens each query token aligns to.

    Args:
      sims: [..., N, m] similarities of query tokens to document tokens.
      doc_mask: [N, m], 1 for real document tokens.
      alignment: the rule.

    Returns:
      bool [..., N, m], False on padding.
    """
    real = doc_mask > 0
    masked = jnp.where(real, sims, -jnp.inf)
    m = sims.shape[-1]
    if alignment.kind == "topk":
        # The k-th best of a shorter document is -inf: all its real tokens align.
        k = min(int(alignment.value), m)
        threshold = jax.lax.top_k(masked, k)[0][..., k - 1]
    else:
        # Each document has its own count: the count-th best of its sorted row.
        ranked = -jnp.sort(-masked, axis=-1)
        counts = _topp_counts(alignment.value, jnp.sum(real, axis=-1))
        index = jnp.broadcast_to((counts - 1)[:, None], ranked.shape[:-1] + (1,))
        threshold = jnp.take_along_axis(ranked, index, axis=-1)[..., 0]
    threshold = jax.lax.stop_gradient(threshold)
    return (masked >= threshold[..., None]) & real


def aligner_scores(
    query: jax.Array,
    query_mask: jax.Array,
    query_salience: jax.Array,
    docs: jax.Array,
    doc_mask: jax.Array,
    doc_salience: jax.Array,
    alignment: Alignment = TOP1,
) -> jax.Array:
    """sim(Q, D) of every query against every document.

    Args:
      query: [Q, n, d] unit query token vectors.
      query_mask: [Q, n], 1 for real query tokens.
      query_salience: [Q, n] u^q.
      docs: [N, m, d] unit document token vectors.
      doc_mask: [N, m], 1 for real document tokens.
      doc_salience: [N, m] u^d.
      alignment: the pairwise alignment rule.

    Returns:
      [Q, N] float32 scores.
    """
    sims = jnp.einsum("qid,bjd->qibj", query.astype(jnp.float32), docs.astype(jnp.float32))
    aligned = aligned_tokens(sims, doc_mask, alignment)
    u_doc = jnp.where(doc_mask > 0, doc_salience.astype(jnp.float32), 0.0)
    u_query = jnp.where(query_mask > 0, query_salience.astype(jnp.float32), 0.0)
    # sum_ij A_ij S_ij = sum_i u^q_i sum_j Ã_ij u^d_j S_ij, and likewise Z.
    weights = jnp.where(aligned, u_doc[None, None], 0.0)
    numerator = jnp.einsum("qi,qibj->qb", u_query, weights * sims)
    z = jnp.einsum("qi,qibj->qb", u_query, weights)
    return jnp.where(z > 0, numerator / jnp.where(z > 0, z, 1.0), 0.0)


def aligner_loss(
    query: jax.Array,
    query_mask: jax.Array,
    query_salience: jax.Array,
    positive: jax.Array,
    positive_mask: jax.Array,
    positive_salience: jax.Array,
    negative: Optional[jax.Array] = None,
    negative_mask: Optional[jax.Array] = None,
    negative_salience: Optional[jax.Array] = None,
    has_negative: Optional[jax.Array] = None,
    *,
    alignment: Alignment = TOP1,
    temperature: float = 1.0,
) -> jax.Array:
    """Mean cross-entropy of sim / temperature over the batch's positives and negatives.

    Args:
      query: [B, n, d] unit query token vectors.
      query_mask: [B, n] 0/1 query token mask.
      query_salience: [B, n] u^q.
      positive: [B, m, d] unit positive token vectors.
      positive_mask: [B, m] 0/1.
      positive_salience: [B, m] u^d of the positives.
      negative: optional [B, m, d] hard-negative token vectors.
      negative_mask: [B, m] 0/1 (with `negative`).
      negative_salience: [B, m] u^d of the negatives (with `negative`).
      has_negative: optional [B] 0/1; a 0 removes that hard negative.
      alignment: the pairwise alignment rule (the paper trains with top1).
      temperature: divides the scores before the softmax.

    Returns:
      The scalar loss, float32.
    """
    batch = query.shape[0]
    docs, masks, saliences = [positive], [positive_mask], [positive_salience]
    valid = [jnp.ones((batch,), bool)]
    if negative is not None:
        present = jnp.ones((batch,), bool) if has_negative is None else has_negative > 0
        docs.append(negative)
        masks.append(negative_mask * present[:, None].astype(negative_mask.dtype))
        saliences.append(negative_salience)
        valid.append(present)
    scores = aligner_scores(
        query,
        query_mask,
        query_salience,
        jnp.concatenate(docs),
        jnp.concatenate(masks),
        jnp.concatenate(saliences),
        alignment,
    )
    logits = jnp.where(jnp.concatenate(valid)[None, :], scores / temperature, -jnp.inf)
    target = jnp.diagonal(logits[:, :batch])
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - target)
