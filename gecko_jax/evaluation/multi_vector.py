"""Multi-vector (XTR) retrieval without a gathering stage (XTR, arXiv 2304.01982).

Every token vector of every document is a row of one token index. Each query
token retrieves its top k' index tokens by exact, blockwise search
(`retrieval.top_k`); a query's candidates are the documents of all the tokens
its tokens retrieved. A candidate is scored with f_XTR' without reading any
token it did not retrieve: each query token i contributes its best retrieved
similarity to the document or, where it retrieved none of the document's
tokens, the imputed m_i = its k'-th (lowest) retrieved similarity, an upper
bound on every similarity it did not retrieve; the score is the mean over the
query's tokens. Documents no query token retrieved are not ranked.

Metrics are those of single-vector retrieval (`retrieval.retrieval_metrics`),
over the same judged queries; as there, equal scores rank by document id in
descending string order, and by default a document whose id equals the
query's id is never retrieved for it.
"""

from collections.abc import Sequence
import dataclasses
from typing import Protocol

from absl import logging
import numpy as np

from gecko_jax.evaluation import retrieval

# XTR (arXiv 2304.01982) retrieves k' = 40,000 tokens per query token at inference.
DEFAULT_TOKEN_K = 40_000

# Query tokens searched together: the [tokens, k'] results of a group stay
# small (512 x 40,000 scores and ids are 120 MiB) however long the query list.
_QUERY_TOKEN_BLOCK = 512


class TokenEncoder(Protocol):
    """Anything that turns texts into per-token vectors (`Encoder.encode_tokens`)."""

    def encode_tokens(
        self,
        texts: Sequence[str],
        prompt: str | None = None,
        dim: int | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> list[np.ndarray]:
        """Returns one float [n_i, d] array of token vectors per text."""


@dataclasses.dataclass(frozen=True)
class TokenIndex:
    """All document token vectors, padding excluded.

    Attributes:
      vectors: float32 [num_tokens, d], unit rows.
      doc_indices: int64 [num_tokens], the document each row comes from.
    """

    vectors: np.ndarray
    doc_indices: np.ndarray


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit length (zero rows stay zero).

    Cosine must not depend on the encoder normalising (a Matryoshka prefix
    of a unit vector is not one).
    """
    vectors = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


def build_token_index(doc_tokens: Sequence[np.ndarray]) -> TokenIndex:
    """Stacks the token vectors of documents 0, 1, ... into one index.

    Args:
      doc_tokens: per document, float [n_j, d] token vectors (padding left out).

    Returns:
      The index, rows normalised to unit length.
    """
    doc_indices = np.repeat(np.arange(len(doc_tokens)), [len(tokens) for tokens in doc_tokens])
    return TokenIndex(unit_rows(np.concatenate(doc_tokens)), doc_indices)


def retrieve_tokens(
    query_tokens: np.ndarray, index: TokenIndex, token_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k' index tokens of each query token, exactly.

    Args:
      query_tokens: float [n, d] unit query token vectors.
      index: the token index.
      token_k: k'; capped at the number of index tokens.

    Returns:
      (similarities, document indices), both [n, min(k', num_tokens)], best
      first.
    """
    scores, rows = retrieval.top_k(query_tokens, index.vectors, token_k)
    return scores, index.doc_indices[rows]


def xtr_scores(token_scores: np.ndarray, token_docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """f_XTR' of each candidate document from one query's retrieved tokens.

    Args:
      token_scores: float [n, k'], each query token's retrieved similarities,
        best first (so the last column is m_i).
      token_docs: int [n, k'], the documents of those tokens.

    Returns:
      (candidate document indices ascending, float32 scores), both [C].
    """
    candidates, position = np.unique(token_docs, return_inverse=True)
    imputed = token_scores[:, -1]
    per_token = np.repeat(imputed[:, None], len(candidates), axis=1)
    rows = np.broadcast_to(np.arange(len(token_scores))[:, None], token_docs.shape)
    # Retrieved similarities are at least m_i, so a maximum over m_i and them
    # is the best retrieved one wherever the token retrieved the document.
    np.maximum.at(per_token, (rows, position.reshape(token_docs.shape)), token_scores)
    return candidates, per_token.mean(axis=0, dtype=np.float32)


def search(
    query_tokens: Sequence[np.ndarray],
    index: TokenIndex,
    token_k: int,
    k: int,
    excluded: np.ndarray | None = None,
    tie_order: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Ranks documents for each query by f_XTR'.

    Args:
      query_tokens: per query, float [n_i, d] token vectors.
      index: the token index.
      token_k: k', index tokens retrieved per query token.
      k: documents kept per query.
      excluded: int [num_queries], a document index each query must not
        retrieve, or -1 for none.
      tie_order: int [num_docs], where each document goes among equal scores,
        lower first (see `retrieval.descending_id_order`); None for its index.

    Returns:
      Per query, up to k document indices, best first, equal scores in
      `tie_order`.
    """
    rankings = []
    for i, scores, docs in retrieve_query_tokens(query_tokens, index, token_k):
        candidates, doc_scores = xtr_scores(scores, docs)
        rankings.append(
            rank_candidates(candidates, doc_scores, k, -1 if excluded is None else excluded[i], tie_order)
        )
    return rankings


def retrieve_query_tokens(query_tokens: Sequence[np.ndarray], index: TokenIndex, token_k: int):
    """`retrieve_tokens` for many queries, their tokens searched together in groups.

    Args:
      query_tokens: per query, float [n_i, d] token vectors (normalised here).
      index: the token index.
      token_k: k', index tokens retrieved per query token.

    Yields:
      (query number, similarities [n_i, k'], document indices [n_i, k']) in
      query order.
    """
    for start, stop in _query_groups(query_tokens):
        group = [unit_rows(tokens) for tokens in query_tokens[start:stop]]
        scores, docs = retrieve_tokens(np.concatenate(group), index, token_k)
        bounds = np.cumsum([0] + [len(tokens) for tokens in group])
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]), start):
            yield i, scores[lo:hi], docs[lo:hi]


def rank_candidates(
    candidates: np.ndarray,
    scores: np.ndarray,
    k: int,
    excluded: int = -1,
    tie_order: np.ndarray | None = None,
) -> np.ndarray:
    """The best k of one query's scored candidates.

    Args:
      candidates: int [C] document indices.
      scores: float [C], their scores.
      k: documents kept.
      excluded: a document index the query must not retrieve, or -1.
      tie_order: as in `search`.

    Returns:
      Up to k document indices, best first, equal scores in `tie_order`.
    """
    keep = candidates != excluded
    candidates, scores = candidates[keep], scores[keep]
    ties = candidates if tie_order is None else tie_order[candidates]
    return candidates[np.lexsort((ties, -scores))[:k]]


def _query_groups(query_tokens: Sequence[np.ndarray]):
    """Yields (start, stop) of runs of queries of at most _QUERY_TOKEN_BLOCK tokens.

    A longer query is a run of its own.
    """
    start, count = 0, 0
    for i, tokens in enumerate(query_tokens):
        if i > start and count + len(tokens) > _QUERY_TOKEN_BLOCK:
            yield start, i
            start, count = i, 0
        count += len(tokens)
    if query_tokens:
        yield start, len(query_tokens)


def evaluate_multi_vector_retrieval(
    encoder: TokenEncoder,
    corpus: retrieval.Corpus,
    queries: retrieval.Queries,
    qrels: retrieval.Qrels,
    query_prompt: str | None = None,
    doc_prompt: str | None = None,
    dim: int | None = None,
    doc_format: str = retrieval.DEFAULT_DOC_FORMAT,
    batch_size: int | None = None,
    show_progress: bool | None = False,
    missing_title: str = "",
    ignore_identical_ids: bool = True,
    token_k: int = DEFAULT_TOKEN_K,
) -> dict[str, float | int]:
    """`retrieval.evaluate_retrieval` for a multi-vector encoder.

    Args: as `retrieval.evaluate_retrieval`, and
      token_k: k', index tokens retrieved per query token.

    Returns:
      The metrics of `retrieval.retrieval_metrics` plus `num_docs` and
      `num_doc_tokens`.
    """
    query_ids = retrieval.judged_query_ids(corpus, queries, qrels)
    doc_ids = list(corpus)
    documents = retrieval.format_documents(corpus, doc_ids, doc_format, missing_title)
    common = dict(dim=dim, batch_size=batch_size, show_progress=show_progress)
    query_tokens = encoder.encode_tokens(
        [queries[query_id] for query_id in query_ids], prompt=query_prompt, **common
    )
    index = build_token_index(encoder.encode_tokens(documents, prompt=doc_prompt, **common))
    logging.info(
        "multi-vector retrieval: %d queries over %d documents (%d tokens), k'=%d",
        len(query_ids),
        len(doc_ids),
        len(index.vectors),
        token_k,
    )
    excluded = retrieval.identical_id_indices(query_ids, doc_ids) if ignore_identical_ids else None
    rankings = search(
        query_tokens,
        index,
        token_k,
        max(retrieval.RECALL_CUTOFFS),
        excluded,
        retrieval.descending_id_order(doc_ids),
    )
    metrics = retrieval.retrieval_metrics(
        {query_id: [doc_ids[i] for i in ranking] for query_id, ranking in zip(query_ids, rankings)},
        {query_id: qrels[query_id] for query_id in query_ids},
    )
    metrics.update(num_docs=len(doc_ids), num_doc_tokens=len(index.vectors))
    return metrics
