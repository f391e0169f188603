"""Tests for gecko_jax.evaluation.retrieval: metrics, search, readers."""

import json
import math

import numpy as np
import pytest

from gecko_jax.errors import UserError
from gecko_jax.evaluation import retrieval


class LookupEncoder:
    """Fake encoder: fixed vectors per text; records the texts it saw."""

    def __init__(self, vectors):
        self.vectors = vectors
        self.calls = []

    def encode(self, texts, prompt=None, dim=None, batch_size=None,
               show_progress=False):
        self.calls.append((list(texts), prompt, dim))
        return np.array([self.vectors[t] for t in texts], np.float32)


def test_metrics_match_hand_computed_values():
    qrels = {
        "q1": {"d1": 2, "d2": 1},
        "q2": {"d5": 1},
        "q3": {"d6": 0},  # No relevant document: left out of the means.
        "q4": {"d7": 1},  # Not in the rankings: retrieves nothing.
    }
    rankings = {"q1": ["d3", "d1", "d4", "d2"], "q2": ["d5", "d1"], "q3": ["d6"]}
    metrics = retrieval.retrieval_metrics(rankings, qrels)

    # q1: gains 0, 2, 0, 1 at ranks 1..4; ideal gains 2, 1.
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    ndcg = [dcg / idcg, 1.0, 0.0]
    assert metrics["ndcg@10"] == pytest.approx(sum(ndcg) / 3)
    assert metrics["mrr@10"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert metrics["recall@1"] == pytest.approx((0 + 1 + 0) / 3)
    for k in (5, 10, 100):
        assert metrics[f"recall@{k}"] == pytest.approx((1 + 1 + 0) / 3)
    assert metrics["num_queries"] == 3


def test_metrics_cutoffs():
    # The only relevant document is at rank 11: outside @10, inside @100.
    ranking = [f"x{i}" for i in range(10)] + ["hit"]
    metrics = retrieval.retrieval_metrics({"q": ranking}, {"q": {"hit": 1}})
    assert metrics["ndcg@10"] == metrics["mrr@10"] == metrics["recall@10"] == 0
    assert metrics["recall@100"] == 1
    # Half the relevant documents found within 1.
    metrics = retrieval.retrieval_metrics(
        {"q": ["a", "z", "b"]}, {"q": {"a": 1, "b": 1}})
    assert metrics["recall@1"] == 0.5 and metrics["recall@5"] == 1


def test_metrics_without_relevant_documents_is_an_error():
    with pytest.raises(UserError, match="no query has a relevant document"):
        retrieval.retrieval_metrics({}, {"q": {"d": 0}})


def test_top_k_matches_full_sort_across_blocks(monkeypatch):
    monkeypatch.setattr(retrieval, "_QUERY_BLOCK", 7)
    monkeypatch.setattr(retrieval, "_DOC_BLOCK", 11)
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(20, 8)).astype(np.float32)
    docs = rng.normal(size=(50, 8)).astype(np.float32)
    excluded = np.full(20, -1)
    excluded[3] = int(np.argmax(queries[3] @ docs.T))  # Its best document.
    scores, indices = retrieval.top_k(queries, docs, 9, excluded)

    full = queries @ docs.T
    full[3, excluded[3]] = -np.inf
    expected = np.argsort(-full, axis=1, kind="stable")[:, :9]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, 1),
                               rtol=1e-5)
    # k beyond the corpus is capped.
    assert retrieval.top_k(queries, docs[:4], 9)[1].shape == (20, 4)


def _write_beir(folder, corpus, queries, qrels_lines, split="test"):
    folder.mkdir(exist_ok=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / f"{split}.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(l + "\n" for l in qrels_lines))


def test_beir_folder_end_to_end(tmp_path):
    corpus = [{"_id": "d1", "title": "Paris", "text": "capital of France"},
              {"_id": "d2", "title": "", "text": "a fish"},
              {"_id": "q2", "title": "", "text": "same id as a query"}]
    queries = [{"_id": "q1", "text": "french capital"},
               {"_id": "q2", "text": "fish"},
               {"_id": "q3", "text": "unjudged"}]
    _write_beir(tmp_path, corpus, queries, ["q1\td1\t1", "q2\td2\t1"])
    data = retrieval.load_retrieval(str(tmp_path))
    assert data.split == "test"
    assert set(data.queries) == {"q1", "q2"}  # Only judged queries are kept.
    assert data.corpus["d2"] == {"title": "", "text": "a fish"}

    fmt = "title: {title} | text: {text}"
    vectors = {
        "french capital": [1, 0, 0], "fish": [0, 1, 0],
        "title: Paris | text: capital of France": [1, 0.1, 0],
        "title:  | text: a fish": [0, 1, 0.5],
        # Would be q2's best match, but shares its id, so is never retrieved.
        "title:  | text: same id as a query": [0, 1, 0],
    }
    encoder = LookupEncoder(vectors)
    metrics = retrieval.evaluate_retrieval(
        encoder, data.corpus, data.queries, data.qrels, query_prompt="q: ",
        doc_format=fmt, dim=3)
    assert metrics["ndcg@10"] == pytest.approx(1.0)
    assert metrics["mrr@10"] == pytest.approx(1.0)
    assert (metrics["num_queries"], metrics["num_docs"]) == (2, 3)
    assert encoder.calls[0] == (["french capital", "fish"], "q: ", 3)
    assert encoder.calls[1][1:] == (None, 3)


@pytest.mark.parametrize("corpus_text, qrels_lines, message", [
    ('{"_id": "d1", "text": "x"}\n{"_id": "d2", "text": \n', ["q1\td1\t1"],
     r"corpus\.jsonl:2: not valid JSON"),
    ('{"_id": "d1"}\n', ["q1\td1\t1"], r"corpus\.jsonl:1: missing 'text'"),
    ('{"_id": "d1", "text": "x"}\n', ["q1\td1"], r"test\.tsv:2: 2 tab-separated"),
    ('{"_id": "d1", "text": "x"}\n', ["q1\td1\thigh"], r"test\.tsv:2: score 'high'"),
    ('{"_id": "d1", "text": "x"}\n', ["q9\td1\t1"], r"not in queries\.jsonl"),
])
def test_beir_errors_name_file_and_line(tmp_path, corpus_text, qrels_lines,
                                        message):
    _write_beir(tmp_path, [], [{"_id": "q1", "text": "hi"}], qrels_lines)
    (tmp_path / "corpus.jsonl").write_text(corpus_text, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        retrieval.load_retrieval(str(tmp_path))


def test_beir_missing_split_and_non_beir_paths(tmp_path):
    _write_beir(tmp_path / "b", [{"_id": "d", "text": "x"}],
                [{"_id": "q", "text": "y"}], ["q\td\t1"], split="dev")
    with pytest.raises(UserError, match="splits here: dev"):
        retrieval.load_retrieval(str(tmp_path / "b"), "test")
    with pytest.raises(UserError, match="not a BEIR folder"):
        retrieval.load_retrieval(str(tmp_path))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(UserError, match="expected a BEIR folder"):
        retrieval.load_retrieval(str(tmp_path / "x.txt"))
    with pytest.raises(UserError, match="no such file"):
        retrieval.load_retrieval(str(tmp_path / "absent.json"))


def test_bad_squad_files(tmp_path):
    (tmp_path / "a.json").write_text('{"data": [\n{"title": 1,')
    with pytest.raises(UserError, match=r"a\.json:2: not valid JSON"):
        retrieval.load_squad(str(tmp_path / "a.json"))
    (tmp_path / "b.json").write_text('{"data": [{"title": "T", "paragraphs":'
                                     ' [{"qas": []}]}]}')
    with pytest.raises(UserError, match="article 0 paragraph 0: bad or missing"
                       " 'context'"):
        retrieval.load_squad(str(tmp_path / "b.json"))


def test_doc_format_rejects_unknown_fields():
    with pytest.raises(UserError, match="only {title} and {text}"):
        retrieval.format_documents({"d": {"text": "x"}}, ["d"], "{body}")
    assert retrieval.format_documents(
        {"d": {"title": "", "text": "x"}}, ["d"]) == ["x"]


def test_squad_dev_a_counts(shared_data):
    data = retrieval.load_retrieval(str(shared_data / "squad" / "dev-a.json"))
    assert (len(data.corpus), len(data.queries), len(data.qrels)) == (913, 4961, 4961)
    assert data.split is None
    assert all(len(judged) == 1 for judged in data.qrels.values())
    first = data.corpus[next(iter(data.qrels["56be4db0acb8001400a502ec"]))]
    assert first["title"] == "Super Bowl 50"
    assert first["text"].startswith("Super Bowl 50 was an American football game")
    assert data.queries["56be4db0acb8001400a502ec"] == (
        "Which NFL team represented the AFC at Super Bowl 50?")
