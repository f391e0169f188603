"""XTR's in-batch token-retrieval loss (arXiv 2304.01982).

Every query token retrieves its top-k_train tokens among *all* document tokens
of the batch (positives and hard negatives of every example), and a document
is scored only through the tokens it got retrieved:

    P_ij      = q_i . d_j                          (unit token vectors)
    A_ij      = 1[j in top-k_train over all m*B batch tokens of P_i.]
    f(Q, D)   = (1/Z) sum_i max_{j in D} A_ij P_ij    (j over D's real tokens)
    Z         = |{i : some j in D has A_ij = 1}|, clipped away from 0
    L         = mean_q  -log softmax_D f(Q_q, D)[positive of q]

The softmax runs over the batch documents (every positive and every hard
negative) with no temperature, as in the paper. Padding is excluded on both
sides: padded document tokens are never retrieved, padded query tokens
retrieve nothing and do not count in Z. A document none of whose tokens were
retrieved has Z = 0 and a zero numerator; Z is clipped to 1 there so its score
is 0, which is how the paper penalises a positive that was never retrieved.

The top-k is taken separately for each query token, as the paper defines
A_ij. (lightning-ir's XTR takes one top-k per query over the flattened
[n * B * m] block, which is a different alignment; this module follows the
paper.) The retrieval mask is a selection, so no gradient flows through it;
gradients flow through the retrieved similarities P_ij.

Memory: the whole [Q, n, N, m] similarity block is materialised, about
1 GiB in float32 for 128 queries of 32 tokens against 256 documents of 256
tokens; scores of different queries are independent, so a query-chunked map
is the remedy if that is too much.

The registry adapter reads per-token embeddings ([B, L, d] per text field,
from a multi-vector head) and the batch keys `query_mask`, `positive_mask`,
`negative_mask` ([B, L] 0/1 token masks) and `has_negative` ([B]).
"""

from typing import Optional

import jax
import jax.numpy as jnp


def xtr_scores(
    query: jax.Array, query_mask: jax.Array, docs: jax.Array, doc_mask: jax.Array, *, k_train: int
) -> jax.Array:
    """f_XTR of every query against every document of the batch.

    Args:
      query: [Q, n, d] L2-normalised query token vectors.
      query_mask: [Q, n], 1 for real query tokens.
      docs: [N, m, d] L2-normalised document token vectors.
      doc_mask: [N, m], 1 for real document tokens.
      k_train: tokens each query token retrieves from the N * m batch tokens
        (all real tokens when fewer are there).

    Returns:
      [Q, N] scores, float32.
    """
    num_queries, n, _ = query.shape
    num_docs, m, _ = docs.shape
    sims = jnp.einsum("qid,bjd->qibj", query.astype(jnp.float32), docs.astype(jnp.float32))
    real = (query_mask[:, :, None, None] > 0) & (doc_mask[None, None, :, :] > 0)
    flat = jnp.where(real, sims, -jnp.inf).reshape(num_queries, n, num_docs * m)
    k = min(k_train, num_docs * m)
    # The k-th best similarity of each query token is its retrieval threshold;
    # ties at the threshold can retrieve a few more than k tokens.
    threshold = jax.lax.stop_gradient(jax.lax.top_k(flat, k)[0][..., -1:])
    retrieved = (flat >= threshold) & (flat > -jnp.inf)
    retrieved = retrieved.reshape(num_queries, n, num_docs, m)
    # max_j A_ij P_ij runs over the document's real tokens, a non-retrieved
    # one counting 0; padding takes no part, and a document without real
    # tokens (a missing hard negative) scores 0.
    doc_real = doc_mask > 0
    aligned = jnp.where(retrieved, sims, jnp.where(doc_real[None, None], 0.0, -jnp.inf))
    best = jnp.where(jnp.any(doc_real, axis=-1)[None, None], jnp.max(aligned, axis=-1), 0.0)
    z = jnp.sum(jnp.any(retrieved, axis=-1), axis=1)  # [Q, N]
    return jnp.sum(best, axis=1) / jnp.maximum(z, 1).astype(jnp.float32)


def xtr_loss(
    query: jax.Array,
    query_mask: jax.Array,
    positive: jax.Array,
    positive_mask: jax.Array,
    negative: Optional[jax.Array] = None,
    negative_mask: Optional[jax.Array] = None,
    has_negative: Optional[jax.Array] = None,
    *,
    k_train: int = 128,
) -> jax.Array:
    """Mean cross-entropy of f_XTR over the batch's positives and negatives.

    Args:
      query: [B, n, d] L2-normalised query token vectors.
      query_mask: [B, n] 0/1 query token mask.
      positive: [B, m, d] L2-normalised positive token vectors.
      positive_mask: [B, m] 0/1 positive token mask.
      negative: optional [B, m, d] hard-negative token vectors.
      negative_mask: [B, m] 0/1 hard-negative token mask (with `negative`).
      has_negative: optional [B] 0/1; a 0 removes that hard negative from the
        batch documents (its tokens are then never retrieved either).
      k_train: tokens each query token retrieves from the batch.

    Returns:
      The scalar loss, float32.
    """
    batch = query.shape[0]
    docs, doc_mask, doc_valid = [positive], [positive_mask], [jnp.ones((batch,), bool)]
    if negative is not None:
        present = jnp.ones((batch,), bool) if has_negative is None else has_negative > 0
        docs.append(negative)
        doc_mask.append(negative_mask * present[:, None].astype(negative_mask.dtype))
        doc_valid.append(present)
    scores = xtr_scores(query, query_mask, jnp.concatenate(docs), jnp.concatenate(doc_mask), k_train=k_train)
    logits = jnp.where(jnp.concatenate(doc_valid)[None, :], scores, -jnp.inf)
    target = jnp.diagonal(logits[:, :batch])
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - target)
