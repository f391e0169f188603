"""Dense retrieval evaluation: BEIR folders and SQuAD files, exact search.

Data lives in BEIR's in-memory structure:

* corpus: `{doc_id: {"title": str, "text": str}}`
* queries: `{query_id: text}`
* qrels: `{query_id: {doc_id: relevance}}`; relevance > 0 means relevant.

Search is exact (every query against every document by dot product of unit
vectors, i.e. cosine), done block by block so that memory stays bounded for a
corpus of any size. Metrics follow BEIR / pytrec_eval: nDCG@10 with linear
gains and ideal ranking from the qrels, Recall@k = relevant retrieved in the
top k / all relevant, MRR@10; each is the mean over the queries that the qrels
judge (a query judged with nothing relevant scores 0), as a fraction in
[0, 1]. Equal scores rank by document id in descending string order, as in
pytrec_eval. By default, as in BEIR, a document whose id equals the query's id
is never retrieved for it.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import json
import os
import string

from absl import logging
import numpy as np

from gecko_jax.errors import UserError
from gecko_jax.evaluation.base import TextEncoder
from gecko_jax.evaluation.base import encode_normalized

Corpus = dict[str, dict[str, str]]
Queries = dict[str, str]
Qrels = dict[str, dict[str, int]]

RECALL_CUTOFFS = (1, 5, 10, 100)
NDCG_CUTOFF = 10
MRR_CUTOFF = 10
_METRIC_NAMES = (*(f"recall@{k}" for k in RECALL_CUTOFFS), f"ndcg@{NDCG_CUTOFF}", f"mrr@{MRR_CUTOFF}")

# BEIR / sentence-transformers join title and text with a space. Gecko and
# EmbeddingGemma use `title: {title} | text: {text}`.
DEFAULT_DOC_FORMAT = "{title} {text}"

# Scores of one (query block x document block) tile are float32: 1024 x 16384
# is 64 MiB, whatever the corpus size.
_QUERY_BLOCK = 1024
_DOC_BLOCK = 16384


@dataclasses.dataclass(frozen=True)
class RetrievalDataset:
    """A retrieval task read from disk.

    Attributes:
      corpus: documents by id.
      queries: query texts by id.
      qrels: relevance judgements by query id, then document id.
      path: what was read.
      split: the qrels split used, or None for a file without splits.
    """

    corpus: Corpus
    queries: Queries
    qrels: Qrels
    path: str
    split: str | None


def _read_jsonl(path: str):
    """Yields (line number, object) for each non-blank line of a JSONL file."""
    try:
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{line_number}: not valid JSON ({e.msg})") from None
                if not isinstance(record, dict):
                    raise UserError(f"{path}:{line_number}: expected a JSON object")
                yield line_number, record
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason})") from None


def _field(record: dict, key: str, where: str, default: str | None = None) -> str:
    """`record[key]` as a string; `default` stands in for a missing or null one."""
    value = record.get(key)
    if value is None:
        if default is None:
            raise UserError(f"{where}: missing {key!r}")
        return default
    if not isinstance(value, (str, int)):
        raise UserError(f"{where}: {key!r} must be a string")
    return str(value)


def _reject_empty(texts: Sequence[str], where: str, record_id: str) -> None:
    # Caught here rather than by the encoder, which knows neither file nor
    # line and runs only after the model has loaded.
    if not any(text.strip() for text in texts):
        raise UserError(f"{where}: empty text (id {record_id!r}); drop the line or fill it in")


def _read_corpus(path: str) -> Corpus:
    corpus = {}
    for line_number, record in _read_jsonl(path):
        where = f"{path}:{line_number}"
        doc_id = _field(record, "_id", where)
        if doc_id in corpus:
            raise UserError(f"{where}: duplicate _id {doc_id!r}")
        title = _field(record, "title", where, default="")
        text = _field(record, "text", where)
        _reject_empty((title, text), where, doc_id)
        corpus[doc_id] = {"title": title, "text": text}
    return corpus


def _read_queries(path: str) -> Queries:
    queries = {}
    for line_number, record in _read_jsonl(path):
        where = f"{path}:{line_number}"
        query_id = _field(record, "_id", where)
        if query_id in queries:
            raise UserError(f"{where}: duplicate _id {query_id!r}")
        text = _field(record, "text", where)
        _reject_empty((text,), where, query_id)
        queries[query_id] = text
    return queries


def _read_qrels(path: str) -> Qrels:
    """Reads `query-id<TAB>corpus-id<TAB>score` lines; the header is optional."""
    qrels = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                columns = line.rstrip("\r\n").split("\t")
                where = f"{path}:{line_number}"
                if len(columns) != 3:
                    raise UserError(
                        f"{where}: {len(columns)} tab-separated columns, expected"
                        " 3 (query-id, corpus-id, score)"
                    )
                query_id, doc_id, score = columns
                try:
                    relevance = int(score)
                except ValueError:
                    if line_number == 1:  # The `query-id corpus-id score` header.
                        continue
                    raise UserError(f"{where}: score {score!r} is not an integer") from None
                qrels.setdefault(query_id, {})[doc_id] = relevance
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason})") from None
    return qrels


def load_beir(folder: str, split: str = "test") -> RetrievalDataset:
    """Reads a BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.

    Args:
      folder: the dataset folder.
      split: which qrels file to use.

    Returns:
      The dataset, with only the queries that the split's qrels judge.

    Raises:
      UserError: a file is missing or malformed (named as file:line), or the
        qrels name a query that queries.jsonl lacks.
    """
    qrels_path = os.path.join(folder, "qrels", f"{split}.tsv")
    for needed in ("corpus.jsonl", "queries.jsonl"):
        if not os.path.isfile(os.path.join(folder, needed)):
            raise UserError(f"{folder}: not a BEIR folder (no {needed})")
    if not os.path.isfile(qrels_path):
        qrels_dir = os.path.join(folder, "qrels")
        splits = sorted(
            name[: -len(".tsv")]
            for name in (os.listdir(qrels_dir) if os.path.isdir(qrels_dir) else [])
            if name.endswith(".tsv")
        )
        raise UserError(f"{qrels_path}: no such file; splits here: {', '.join(splits) or 'none'}")
    qrels = _read_qrels(qrels_path)
    all_queries = _read_queries(os.path.join(folder, "queries.jsonl"))
    missing = [query_id for query_id in qrels if query_id not in all_queries]
    if missing:
        raise UserError(f"{qrels_path}: {len(missing)} query id(s) not in queries.jsonl, e.g. {missing[0]!r}")
    queries = {query_id: all_queries[query_id] for query_id in qrels}
    corpus = _read_corpus(os.path.join(folder, "corpus.jsonl"))
    _warn_of_documents_missing(qrels, corpus, qrels_path)
    return RetrievalDataset(corpus, queries, qrels, folder, split)


def _warn_of_documents_missing(qrels: Qrels, corpus: dict, qrels_path: str) -> None:
    """Warns when the qrels judge documents the corpus lacks.

    They are kept, as BEIR and pytrec_eval keep them: a relevant document that
    cannot be retrieved counts as a miss, which lowers every metric. Usually a
    corpus file was cut or the wrong split is read, so it is worth saying.
    """
    missing = sorted(
        {
            doc_id
            for judged in qrels.values()
            for doc_id, relevance in judged.items()
            if relevance > 0 and doc_id not in corpus
        }
    )
    if missing:
        logging.warning(
            "%s: %d relevant document id(s) are not in corpus.jsonl (e.g. %r); they "
            "count as misses in every metric",
            qrels_path,
            len(missing),
            missing[0],
        )


def load_squad(path: str) -> RetrievalDataset:
    """Turns a SQuAD v1.1 JSON file into a passage retrieval task.

    Each distinct paragraph is a document (title: the article title with
    underscores as spaces); each question is a query whose one relevant
    document is its paragraph.

    Args:
      path: a SQuAD v1.1 file (`{"data": [{"title", "paragraphs": [{"context",
        "qas": [{"id", "question"}]}]}]}`).

    Returns:
      The dataset; document ids are `<article index>-<paragraph index>`,
      query ids are SQuAD's question ids.

    Raises:
      UserError: the file is not JSON, not UTF-8, or not in SQuAD's layout.
    """
    try:
        with open(path, encoding="utf-8") as f:
            squad = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason})") from None
    corpus, queries, qrels = {}, {}, {}
    # Identical paragraphs are one document, so that retrieving either copy
    # counts as a hit.
    doc_id_by_context = {}
    where = "top level"
    try:
        for article_index, article in enumerate(squad["data"]):
            where = f"article {article_index}"
            title = article["title"].replace("_", " ")
            for paragraph_index, paragraph in enumerate(article["paragraphs"]):
                where = f"article {article_index} paragraph {paragraph_index}"
                context = paragraph["context"]
                doc_id = doc_id_by_context.setdefault(context, f"{article_index}-{paragraph_index}")
                corpus.setdefault(doc_id, {"title": title, "text": context})
                for qa in paragraph["qas"]:
                    query_id = str(qa["id"])
                    if query_id in queries:
                        raise UserError(f"{path}: duplicate question id {query_id!r}")
                    queries[query_id] = qa["question"]
                    qrels[query_id] = {doc_id: 1}
    except (KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: not a SQuAD v1.1 file ({where}: bad or missing {e})") from None
    return RetrievalDataset(corpus, queries, qrels, path, None)


def load_retrieval(path: str, split: str | None = None) -> RetrievalDataset:
    """Reads a BEIR folder or a SQuAD v1.1 JSON file.

    Args:
      path: a BEIR folder, or a `.json` SQuAD file.
      split: the BEIR qrels split (default test); a SQuAD file has no splits,
        so it is ignored there with a warning.

    Returns:
      The dataset.

    Raises:
      UserError: the path is missing, of neither kind, or malformed.
    """
    if os.path.isdir(path):
        return load_beir(path, split or "test")
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file or folder")
    if not path.endswith(".json"):
        raise UserError(
            f"{path}: expected a BEIR folder (corpus.jsonl, queries.jsonl,"
            " qrels/<split>.tsv) or a SQuAD v1.1 .json file"
        )
    if split is not None:
        logging.warning("%s is a SQuAD file without splits; split %r ignored", path, split)
    return load_squad(path)


def format_documents(
    corpus: Corpus,
    doc_ids: Sequence[str],
    doc_format: str = DEFAULT_DOC_FORMAT,
    missing_title: str = "",
) -> list[str]:
    """Renders documents to the strings the encoder sees.

    Args:
      corpus: documents by id.
      doc_ids: which documents, in order.
      doc_format: a `str.format` template over `{title}` and `{text}`;
        surrounding whitespace of the result is stripped, so the default
        `"{title} {text}"` gives just the text when there is no title.
      missing_title: stands in for an empty title (Gecko's format says
        `title: none`).

    Returns:
      One string per id.

    Raises:
      UserError: the template names another field or is malformed.
    """
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(doc_format) if name is not None}
    except ValueError as e:
        raise UserError(f"bad document format {doc_format!r}: {e}") from None
    if not fields <= {"title", "text"}:
        raise UserError(f"document format {doc_format!r} may use only {{title}} and {{text}}")
    return [
        doc_format.format(
            title=corpus[doc_id].get("title") or missing_title,
            text=corpus[doc_id]["text"],
        ).strip()
        for doc_id in doc_ids
    ]


def descending_id_order(doc_ids: Sequence[str]) -> np.ndarray:
    """Each document's place when the ids are sorted in descending string order.

    pytrec_eval, and so BEIR and MTEB, ranks equal scores in this order, which
    decides the numbers on corpora with duplicate documents (Quora,
    CQADupStack). Python compares strings by code point, as strcmp compares
    their UTF-8 bytes.

    Args:
      doc_ids: distinct document ids.

    Returns:
      int64 [len(doc_ids)], 0 for the greatest id; a `tie_order` for `top_k`.
    """
    by_id = sorted(range(len(doc_ids)), key=doc_ids.__getitem__, reverse=True)
    order = np.empty(len(doc_ids), np.int64)
    order[by_id] = np.arange(len(doc_ids))
    return order


def identical_id_indices(query_ids: Sequence[str], doc_ids: Sequence[str]) -> np.ndarray:
    """int [num_queries]: the index of the document with each query's id, or -1."""
    doc_index = {doc_id: i for i, doc_id in enumerate(doc_ids)}
    return np.array([doc_index.get(query_id, -1) for query_id in query_ids], np.int64)


def top_k(
    query_embeddings: np.ndarray,
    doc_embeddings: np.ndarray,
    k: int,
    excluded: np.ndarray | None = None,
    tie_order: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k documents per query by dot product, in bounded memory.

    Args:
      query_embeddings: float [num_queries, D].
      doc_embeddings: float [num_docs, D].
      k: how many to keep; capped at num_docs.
      excluded: int [num_queries], a document index each query must not
        retrieve, or -1 for none.
      tie_order: int [num_docs], where each document goes among equal scores,
        lower first (see `descending_id_order`); None for its index.

    Returns:
      (scores, indices), both [num_queries, min(k, num_docs)], best first, equal
      scores in `tie_order`, except at the k-th place where the choice among
      tied documents is arbitrary. An excluded document can only appear (with
      score -inf) when k exceeds the documents left.
    """
    num_queries, num_docs = len(query_embeddings), len(doc_embeddings)
    k = min(k, num_docs)
    all_scores = np.empty((num_queries, k), np.float32)
    all_indices = np.empty((num_queries, k), np.int64)
    for q_start in range(0, num_queries, _QUERY_BLOCK):
        queries = query_embeddings[q_start : q_start + _QUERY_BLOCK]
        rows = np.arange(len(queries))
        best_scores = np.empty((len(queries), 0), np.float32)
        best_indices = np.empty((len(queries), 0), np.int64)
        for d_start in range(0, num_docs, _DOC_BLOCK):
            docs = doc_embeddings[d_start : d_start + _DOC_BLOCK]
            scores = (queries @ docs.T).astype(np.float32)
            if excluded is not None:
                local = excluded[q_start : q_start + len(queries)] - d_start
                hit = (local >= 0) & (local < len(docs))
                scores[rows[hit], local[hit]] = -np.inf
            indices = np.broadcast_to(np.arange(d_start, d_start + len(docs)), scores.shape)
            best_scores = np.concatenate([best_scores, scores], axis=1)
            best_indices = np.concatenate([best_indices, indices], axis=1)
            if best_scores.shape[1] > k:
                keep = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
                best_scores = np.take_along_axis(best_scores, keep, axis=1)
                best_indices = np.take_along_axis(best_indices, keep, axis=1)
        ties = best_indices if tie_order is None else tie_order[best_indices]
        order = np.lexsort((ties, -best_scores), axis=1)
        all_scores[q_start : q_start + len(queries)] = np.take_along_axis(best_scores, order, axis=1)
        all_indices[q_start : q_start + len(queries)] = np.take_along_axis(best_indices, order, axis=1)
    return all_scores, all_indices


def _dcg(gains: Sequence[int]) -> float:
    """Discounted cumulative gain: sum of gain / log2(rank + 1), ranks from 1."""
    return sum(gain / np.log2(rank + 1) for rank, gain in enumerate(gains, 1))


def _check_some_relevant(qrels: Mapping[str, Mapping[str, int]]) -> None:
    if not any(rel > 0 for judgements in qrels.values() for rel in judgements.values()):
        raise UserError("no query has a relevant document (score > 0) in the qrels")


def _query_metrics(ranking: Sequence[str], judgements: Mapping[str, int]) -> dict[str, float]:
    """The metrics of one query's ranking, named as `retrieval_metrics` names them."""
    relevant = {doc_id: rel for doc_id, rel in judgements.items() if rel > 0}
    if not relevant:  # pytrec_eval's value: nothing to find, nothing found.
        return dict.fromkeys(_METRIC_NAMES, 0.0)
    gains = [relevant.get(doc_id, 0) for doc_id in ranking]
    ideal = sorted(relevant.values(), reverse=True)
    metrics = {f"recall@{k}": sum(gain > 0 for gain in gains[:k]) / len(relevant) for k in RECALL_CUTOFFS}
    metrics[f"ndcg@{NDCG_CUTOFF}"] = _dcg(gains[:NDCG_CUTOFF]) / _dcg(ideal[:NDCG_CUTOFF])
    first_hit = next((rank for rank, gain in enumerate(gains[:MRR_CUTOFF], 1) if gain > 0), None)
    metrics[f"mrr@{MRR_CUTOFF}"] = 0.0 if first_hit is None else 1.0 / first_hit
    return metrics


def retrieval_metrics(
    rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]
) -> dict[str, float | int]:
    """nDCG@10, Recall@{1,5,10,100} and MRR@10 of ranked document ids.

    Args:
      rankings: for each query id, the retrieved document ids, best first.
      qrels: relevance judgements; relevance > 0 is relevant and is the gain.
        The means are over every query with a judgement; one with nothing
        relevant scores 0, as pytrec_eval scores it and BEIR and MTEB average
        it. A query missing from `rankings` counts as retrieving nothing.

    Returns:
      `ndcg@10`, `recall@{1,5,10,100}`, `mrr@10` (fractions in [0, 1]) and
      `num_queries` (queries averaged over).

    Raises:
      UserError: no query has a relevant document.
    """
    _check_some_relevant(qrels)
    per_query = [
        _query_metrics(rankings.get(query_id, ()), judgements)
        for query_id, judgements in qrels.items()
        if judgements
    ]
    metrics = {name: float(np.mean([query[name] for query in per_query])) for name in _METRIC_NAMES}
    metrics["num_queries"] = len(per_query)
    return metrics


def judged_query_ids(corpus: Corpus, queries: Queries, qrels: Qrels) -> list[str]:
    """The ids of the queries the qrels judge, in qrels order.

    A query judged with nothing relevant is kept: it scores 0, and counts in
    the means (see `retrieval_metrics`).

    Raises:
      UserError: the corpus is empty, or the qrels judge a query that
        `queries` lacks or none with a relevant document.
    """
    if not corpus:
        raise UserError("the corpus is empty")
    query_ids = [query_id for query_id, judgements in qrels.items() if judgements]
    missing = [query_id for query_id in query_ids if query_id not in queries]
    if missing:
        raise UserError(f"{len(missing)} judged query id(s) have no query text, e.g. {missing[0]!r}")
    _check_some_relevant(qrels)
    return query_ids


def evaluate_retrieval(
    encoder: TextEncoder,
    corpus: Corpus,
    queries: Queries,
    qrels: Qrels,
    query_prompt: str | None = None,
    doc_prompt: str | None = None,
    dim: int | None = None,
    doc_format: str = DEFAULT_DOC_FORMAT,
    batch_size: int | None = None,
    show_progress: bool = False,
    missing_title: str = "",
    ignore_identical_ids: bool = True,
) -> dict[str, float | int]:
    """Embeds queries and corpus, searches exactly, and scores the rankings.

    Args:
      encoder: the model.
      corpus: documents by id.
      queries: query texts by id; only those judged in `qrels` are encoded.
      qrels: relevance judgements by query id.
      query_prompt: prompt for queries (e.g. `task: search result | query: `).
      doc_prompt: prompt for documents (None for symmetric models).
      dim: Matryoshka prefix width, or None for the full width.
      doc_format: how title and text become one string; see
        `format_documents`. Gecko-style models want
        `"title: {title} | text: {text}"`.
      batch_size: encoder batch size, or None for its default.
      show_progress: draw progress bars on stderr.
      missing_title: what `{title}` becomes for a document without one.
      ignore_identical_ids: never retrieve for a query the document with its
        id, as BEIR does by default and MTEB does on ArguAna and Quora, where
        each query is also a document.

    Returns:
      The metrics of `retrieval_metrics` plus `num_docs`.

    Raises:
      UserError: the corpus is empty, or the qrels judge a query that
        `queries` lacks or none with a relevant document.
    """
    query_ids = judged_query_ids(corpus, queries, qrels)
    doc_ids = list(corpus)
    documents = format_documents(corpus, doc_ids, doc_format, missing_title)
    logging.info("retrieval: %d queries over %d documents", len(query_ids), len(doc_ids))
    query_embeddings = encode_normalized(
        encoder,
        [queries[query_id] for query_id in query_ids],
        prompt=query_prompt,
        dim=dim,
        batch_size=batch_size,
        show_progress=show_progress,
    )
    doc_embeddings = encode_normalized(
        encoder, documents, prompt=doc_prompt, dim=dim, batch_size=batch_size, show_progress=show_progress
    )
    excluded = identical_id_indices(query_ids, doc_ids) if ignore_identical_ids else None
    scores, indices = top_k(
        query_embeddings, doc_embeddings, max(RECALL_CUTOFFS), excluded, descending_id_order(doc_ids)
    )
    rankings = {
        query_id: [doc_ids[i] for i, s in zip(row, row_scores) if s > -np.inf]
        for query_id, row, row_scores in zip(query_ids, indices, scores)
    }
    metrics = retrieval_metrics(rankings, {q: qrels[q] for q in query_ids})
    metrics["num_docs"] = len(doc_ids)
    return metrics
