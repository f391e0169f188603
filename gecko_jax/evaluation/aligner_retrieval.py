"""AligneR retrieval: salience-pruned token search, then refinement by sim.

AligneR (arXiv 2211.01267, sections 3 and 4) retrieves in two stages:

1. Candidates. Each document indexes only its ceil(beta^d * m) most salient
   tokens (by u^d), so the token index shrinks to about beta^d of its size;
   each query searches with its ceil(beta^q * n) most salient tokens (by u^q),
   each fetching its k' nearest index tokens exactly (`multi_vector`). A
   query's candidates are the documents of the tokens its search tokens
   fetched; documents none of them reached are not ranked.
2. Refinement. Every candidate is scored by sim(Q, D) over all tokens of the
   query and the document (pruned ones included) under the chosen pairwise
   alignment (`losses.aligner.aligner_scores`, the function the loss trains),
   and candidates are ranked by it.

Few-shot adaptation picks the alignment per task without retraining: on N
labelled queries, drawn at random (seed 0) from the judged ones, every
alignment of the paper's grid (top-k for k in {1, 2, 4, 6, 8}, top-p for p in
{0.5, 1, 1.5, 2}%) ranks the candidates, the one with the best nDCG@10 wins
(the first in grid order among equals), and the metrics are those of the
other queries under it. The candidates do not depend on the alignment, so
they are fetched once.

Metrics and tie order are those of `retrieval`, over the same judged queries;
by default a document whose id equals the query's id is never retrieved for it.
"""

from collections.abc import Sequence
import dataclasses
import functools
import math
import random
from typing import Protocol

from absl import logging
import jax
import numpy as np

from gecko_jax.errors import UserError
from gecko_jax.evaluation import multi_vector
from gecko_jax.evaluation import retrieval
from gecko_jax.losses import aligner
from gecko_jax.losses import alignment as alignment_lib

# The paper fetches 4,000 neighbours per query token.
DEFAULT_TOKEN_K = 4_000

# Candidates refined in one call: the [n, block, m] similarities stay small,
# and the call compiles for a few block sizes only (powers of two from 16).
_CANDIDATE_BLOCK = 1024
_MIN_BLOCK = 16

# The metric few-shot adaptation maximises.
_ADAPTATION_METRIC = f"ndcg@{retrieval.NDCG_CUTOFF}"


class SalienceEncoder(Protocol):
    """Anything that gives token vectors with saliences (`Encoder.encode_tokens_and_saliences`)."""

    def encode_tokens_and_saliences(
        self,
        texts: Sequence[str],
        side: str,
        prompt: str | None = None,
        dim: int | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Returns per text float [n_i, d] token vectors and float [n_i] saliences."""


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """How AligneR retrieves.

    Attributes:
      alignment: the pairwise alignment of refinement.
      prune_doc: beta^d, the fraction of each document's tokens indexed.
      prune_query: beta^q, the fraction of each query's tokens searched with.
      token_k: k', index tokens each search token fetches.
      adapt_queries: N > 0 picks the alignment from `alignment_lib.ADAPTATION_GRID`
        on N labelled queries instead of using `alignment`.
    """

    alignment: alignment_lib.Alignment = alignment_lib.TOP1
    prune_doc: float = 1.0
    prune_query: float = 1.0
    token_k: int = DEFAULT_TOKEN_K
    adapt_queries: int = 0

    def check(self) -> None:
        """Raises UserError for an option out of range, naming its flag."""
        for flag, value in (("--prune_doc", self.prune_doc), ("--prune_query", self.prune_query)):
            if not 0 < value <= 1:
                raise UserError(
                    f"{flag}={value} is out of range; use a fraction in (0, 1], "
                    "e.g. 0.4 to keep 40% of the tokens"
                )
        if self.token_k <= 0:
            raise UserError(f"--token_k must be positive, got {self.token_k}")
        if self.adapt_queries < 0:
            raise UserError(
                f"--adapt_alignment must be 0 (off) or a number of queries, got {self.adapt_queries}"
            )


@dataclasses.dataclass(frozen=True)
class PaddedTokens:
    """Texts' token vectors and saliences padded to one length.

    Attributes:
      vectors: float32 [num_texts, L, d] unit rows, padding zero.
      mask: int32 [num_texts, L], 1 for real tokens.
      saliences: float32 [num_texts, L], padding zero.
    """

    vectors: np.ndarray
    mask: np.ndarray
    saliences: np.ndarray


def pad_tokens(vectors: Sequence[np.ndarray], saliences: Sequence[np.ndarray]) -> PaddedTokens:
    """Stacks per-text [n_i, d] vectors and [n_i] saliences, normalising the vectors."""
    length = max(len(v) for v in vectors)
    dim = vectors[0].shape[1]
    out = PaddedTokens(
        np.zeros((len(vectors), length, dim), np.float32),
        np.zeros((len(vectors), length), np.int32),
        np.zeros((len(vectors), length), np.float32),
    )
    for i, (v, u) in enumerate(zip(vectors, saliences)):
        out.vectors[i, : len(v)] = multi_vector.unit_rows(v)
        out.mask[i, : len(v)] = 1
        out.saliences[i, : len(v)] = u
    return out


def most_salient(saliences: np.ndarray, fraction: float) -> np.ndarray:
    """Positions of a text's ceil(fraction * n) most salient tokens, ascending.

    Equal saliences keep the earlier token.
    """
    # The rounding guard keeps 0.1 * 30 = 3.0000000000000004 from becoming 4.
    keep = max(math.ceil(fraction * len(saliences) - 1e-6), 1)
    return np.sort(np.argsort(-saliences, kind="stable")[:keep])


def build_pruned_index(
    doc_vectors: Sequence[np.ndarray], doc_saliences: Sequence[np.ndarray], prune_doc: float
) -> multi_vector.TokenIndex:
    """The token index of each document's ceil(beta^d * m) most salient tokens."""
    return multi_vector.build_token_index(
        [v[most_salient(u, prune_doc)] for v, u in zip(doc_vectors, doc_saliences)]
    )


def candidates(
    query_vectors: Sequence[np.ndarray],
    query_saliences: Sequence[np.ndarray],
    index: multi_vector.TokenIndex,
    prune_query: float,
    token_k: int,
) -> list[np.ndarray]:
    """Per query, the documents (ascending indices) its most salient tokens fetch."""
    search_tokens = [v[most_salient(u, prune_query)] for v, u in zip(query_vectors, query_saliences)]
    return [
        np.unique(docs) for _, _, docs in multi_vector.retrieve_query_tokens(search_tokens, index, token_k)
    ]


@functools.cache
def _refine_fn():
    """The jitted scorer of one query against a block of documents."""

    def scores(query, query_mask, query_salience, docs, doc_mask, doc_salience, alignment):
        return aligner.aligner_scores(
            query[None], query_mask[None], query_salience[None], docs, doc_mask, doc_salience, alignment
        )[0]

    return jax.jit(scores, static_argnames="alignment")


def refine(
    queries: PaddedTokens,
    query: int,
    docs: PaddedTokens,
    doc_indices: np.ndarray,
    alignment: alignment_lib.Alignment,
) -> np.ndarray:
    """sim(Q, D) of one query against the given documents, all tokens counted.

    Args:
      queries: the padded queries.
      query: which of them.
      docs: the padded corpus.
      doc_indices: int [C] documents to score.
      alignment: the pairwise alignment.

    Returns:
      float32 [C] scores.
    """
    out = np.empty(len(doc_indices), np.float32)
    for start in range(0, len(doc_indices), _CANDIDATE_BLOCK):
        block = doc_indices[start : start + _CANDIDATE_BLOCK]
        size = max(_MIN_BLOCK, 1 << (len(block) - 1).bit_length())
        # Filler rows repeat document 0 with an empty mask: they score 0 and are dropped.
        rows = np.zeros(size, np.int64)
        rows[: len(block)] = block
        mask = docs.mask[rows]
        mask[len(block) :] = 0
        scores = _refine_fn()(
            queries.vectors[query],
            queries.mask[query],
            queries.saliences[query],
            docs.vectors[rows],
            mask,
            docs.saliences[rows],
            alignment,
        )
        out[start : start + len(block)] = np.asarray(scores)[: len(block)]
    return out


def rank(
    queries: PaddedTokens,
    docs: PaddedTokens,
    query_candidates: Sequence[np.ndarray],
    which: Sequence[int],
    alignment: alignment_lib.Alignment,
    k: int,
    excluded: np.ndarray | None,
    tie_order: np.ndarray | None,
) -> list[np.ndarray]:
    """Rankings of the queries numbered `which`, each over its candidates, by sim.

    Args:
      queries: the padded queries.
      docs: the padded corpus.
      query_candidates: per query, its candidate document indices.
      which: the queries to rank.
      alignment: the pairwise alignment of sim.
      k: documents kept per query.
      excluded: int [num_queries], a document each query must not retrieve
        (-1 for none), or None.
      tie_order: as in `multi_vector.search`.

    Returns:
      Per query of `which`, up to k document indices, best first.
    """
    rankings = []
    for i in which:
        found = query_candidates[i]
        scores = refine(queries, i, docs, found, alignment)
        rankings.append(
            multi_vector.rank_candidates(found, scores, k, -1 if excluded is None else excluded[i], tie_order)
        )
    return rankings


def evaluate_aligner_retrieval(
    encoder: SalienceEncoder,
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
    options: SearchOptions = SearchOptions(),
) -> dict[str, float | int | str]:
    """`retrieval.evaluate_retrieval` for an encoder with salience heads.

    Args: as `retrieval.evaluate_retrieval`, and
      options: pruning, k', the alignment or its few-shot adaptation.

    Returns:
      The metrics of `retrieval.retrieval_metrics` (over the queries left
      after adaptation) plus `num_docs`, `num_doc_tokens`, `num_index_tokens`
      (tokens kept in the index), `index_fraction` (their share) and
      `alignment` (the name of the alignment used); with adaptation also
      `adaptation_queries` and `adaptation.NAME.ndcg@10` for each alignment
      of the grid.

    Raises:
      UserError: bad options, or adaptation would leave no query to score.
    """
    options.check()
    query_ids = retrieval.judged_query_ids(corpus, queries, qrels)
    if options.adapt_queries >= len(query_ids):
        raise UserError(
            f"--adapt_alignment={options.adapt_queries} leaves none of the "
            f"{len(query_ids)} judged queries to score; use fewer"
        )
    doc_ids = list(corpus)
    documents = retrieval.format_documents(corpus, doc_ids, doc_format, missing_title)
    common = dict(dim=dim, batch_size=batch_size, show_progress=show_progress)
    query_vectors, query_saliences = encoder.encode_tokens_and_saliences(
        [queries[query_id] for query_id in query_ids], "query", prompt=query_prompt, **common
    )
    doc_vectors, doc_saliences = encoder.encode_tokens_and_saliences(
        documents, "document", prompt=doc_prompt, **common
    )
    index = build_pruned_index(doc_vectors, doc_saliences, options.prune_doc)
    num_doc_tokens = sum(len(v) for v in doc_vectors)
    logging.info(
        "AligneR retrieval: %d queries over %d documents, %d of %d tokens indexed, k'=%d",
        len(query_ids),
        len(doc_ids),
        len(index.vectors),
        num_doc_tokens,
        options.token_k,
    )
    query_candidates = candidates(query_vectors, query_saliences, index, options.prune_query, options.token_k)
    padded_queries = pad_tokens(query_vectors, query_saliences)
    padded_docs = pad_tokens(doc_vectors, doc_saliences)
    excluded = retrieval.identical_id_indices(query_ids, doc_ids) if ignore_identical_ids else None
    ranking_args = (max(retrieval.RECALL_CUTOFFS), excluded, retrieval.descending_id_order(doc_ids))

    def metrics_of(which, alignment):
        rankings = rank(padded_queries, padded_docs, query_candidates, which, alignment, *ranking_args)
        return retrieval.retrieval_metrics(
            {query_ids[i]: [doc_ids[j] for j in ranking] for i, ranking in zip(which, rankings)},
            {query_ids[i]: qrels[query_ids[i]] for i in which},
        )

    extra = {}
    alignment, scored = options.alignment, list(range(len(query_ids)))
    if options.adapt_queries:
        shots = sorted(random.Random(0).sample(scored, options.adapt_queries))
        scored = sorted(set(scored) - set(shots))
        best = None
        for candidate in alignment_lib.ADAPTATION_GRID:
            value = metrics_of(shots, candidate)[_ADAPTATION_METRIC]
            extra[f"adaptation.{candidate.name}.{_ADAPTATION_METRIC}"] = value
            if best is None or value > best:
                alignment, best = candidate, value
        extra["adaptation_queries"] = len(shots)
        logging.info(
            "AligneR adaptation on %d queries chose %s (%s %.4f)",
            len(shots),
            alignment.name,
            _ADAPTATION_METRIC,
            best,
        )
    metrics = metrics_of(scored, alignment)
    metrics.update(
        num_docs=len(doc_ids),
        num_doc_tokens=num_doc_tokens,
        num_index_tokens=len(index.vectors),
        index_fraction=len(index.vectors) / num_doc_tokens,
        alignment=alignment.name,
        **extra,
    )
    return metrics
