"""Exact nearest-neighbour search in JAX, a corpus block at a time.

FRet's retrieve stage finds the top-N passages of every generated query by dot
product of unit vectors (cosine). The corpus stays in host memory (numpy) and
only one block of it is on the device at a time, so a 1M x 768 float32 corpus
(2.9 GiB on the host) searches with a device footprint of one block of
vectors plus one [queries, block] score tile. Each block's scores are merged
with the running top-k by `lax.top_k`, inside one jitted function that every
block reuses: blocks are padded to a fixed size so there is one compilation.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

# 65536 x 768 float32 is 192 MiB of corpus, and with 256 queries the score
# tile is 64 MiB.
DEFAULT_CORPUS_BLOCK = 65536
DEFAULT_QUERY_BLOCK = 256


@functools.partial(jax.jit, static_argnames="k")
def _merge_block(
    best_scores: jax.Array,
    best_indices: jax.Array,
    queries: jax.Array,
    block: jax.Array,
    block_start: jax.Array,
    block_valid: jax.Array,
    k: int,
) -> tuple[jax.Array, jax.Array]:
    """The running top-k after seeing one corpus block."""
    scores = jnp.dot(queries, block.T, preferred_element_type=jnp.float32)
    columns = jnp.arange(block.shape[0])
    scores = jnp.where(columns < block_valid, scores, -jnp.inf)
    indices = jnp.broadcast_to(block_start + columns, scores.shape)
    # Running results come first, so on equal scores the earlier (lower)
    # corpus index wins, as top_k keeps the first of ties.
    scores = jnp.concatenate([best_scores, scores], axis=1)
    indices = jnp.concatenate([best_indices, indices], axis=1)
    best_scores, picked = jax.lax.top_k(scores, k)
    return best_scores, jnp.take_along_axis(indices, picked, axis=1)


def exact_top_k(
    queries: np.ndarray,
    corpus: np.ndarray,
    k: int,
    corpus_block: int = DEFAULT_CORPUS_BLOCK,
    query_block: int = DEFAULT_QUERY_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """The k corpus rows with the largest dot product, for every query.

    Args:
      queries: float [num_queries, D].
      corpus: float [num_docs, D]; a numpy array (or memmap) on the host.
      k: neighbours per query; capped at num_docs.
      corpus_block: corpus rows on the device at once.
      query_block: queries scored at once.

    Returns:
      (scores float32, indices int64), both [num_queries, min(k, num_docs)],
      best first; equal scores keep the lower corpus index first.
    """
    num_queries, num_docs = len(queries), len(corpus)
    k = min(k, num_docs)
    corpus_block = min(corpus_block, num_docs)
    query_block = min(query_block, max(num_queries, 1))
    out_scores = np.zeros((num_queries, k), np.float32)
    out_indices = np.zeros((num_queries, k), np.int64)
    for q_start in range(0, num_queries, query_block):
        q = np.zeros((query_block, queries.shape[1]), np.float32)
        rows = min(query_block, num_queries - q_start)
        q[:rows] = queries[q_start : q_start + rows]
        best_scores = jnp.full((query_block, k), -jnp.inf, jnp.float32)
        # Placeholders sort after every real row: -inf loses to any score, and
        # as running results they only win ties against other -inf columns.
        best_indices = jnp.full((query_block, k), -1, jnp.int32)
        for d_start in range(0, num_docs, corpus_block):
            block = np.zeros((corpus_block, corpus.shape[1]), np.float32)
            valid = min(corpus_block, num_docs - d_start)
            block[:valid] = corpus[d_start : d_start + valid]
            best_scores, best_indices = _merge_block(
                best_scores,
                best_indices,
                jnp.asarray(q),
                jnp.asarray(block),
                jnp.int32(d_start),
                jnp.int32(valid),
                k=k,
            )
        out_scores[q_start : q_start + rows] = np.asarray(best_scores)[:rows]
        out_indices[q_start : q_start + rows] = np.asarray(best_indices)[:rows]
    return out_scores, out_indices
