"""Tests for gecko_jax.evaluation.retrieval: metrics, search, readers."""

import json
import math
from unittest import mock

import numpy as np
import pytest

from gecko_jax.errors import UserError
from gecko_jax.evaluation import retrieval


class LookupEncoder:
    """Fake encoder: fixed vectors per text; records the texts it saw."""

    def __init__(self, vectors):
        self.vectors = vectors
        self.calls = []

    def encode(self, texts, prompt=None, dim=None, batch_size=None, show_progress=False):
        self.calls.append((list(texts), prompt, dim))
        return np.array([self.vectors[t] for t in texts], np.float32)


def test_metrics_match_hand_computed_values():
    qrels = {
        "q1": {"d1": 2, "d2": 1},
        "q2": {"d5": 1},
        "q3": {"d6": 0},  # Judged, nothing relevant: 0 in every mean.
        "q4": {"d7": 1},  # Not in the rankings: retrieves nothing.
    }
    rankings = {"q1": ["d3", "d1", "d4", "d2"], "q2": ["d5", "d1"], "q3": ["d6"]}
    metrics = retrieval.retrieval_metrics(rankings, qrels)

    # q1: gains 0, 2, 0, 1 at ranks 1..4; ideal gains 2, 1.
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    ndcg = [dcg / idcg, 1.0, 0.0, 0.0]
    assert metrics["ndcg@10"] == pytest.approx(sum(ndcg) / 4)
    assert metrics["mrr@10"] == pytest.approx((1 / 2 + 1 + 0 + 0) / 4)
    assert metrics["recall@1"] == pytest.approx((0 + 1 + 0 + 0) / 4)
    for k in (5, 10, 100):
        assert metrics[f"recall@{k}"] == pytest.approx((1 + 1 + 0 + 0) / 4)
    assert metrics["num_queries"] == 4


def test_metrics_cutoffs():
    # The only relevant document is at rank 11: outside @10, inside @100.
    ranking = [f"x{i}" for i in range(10)] + ["hit"]
    metrics = retrieval.retrieval_metrics({"q": ranking}, {"q": {"hit": 1}})
    assert metrics["ndcg@10"] == metrics["mrr@10"] == metrics["recall@10"] == 0
    assert metrics["recall@100"] == 1
    # Half the relevant documents found within 1.
    metrics = retrieval.retrieval_metrics({"q": ["a", "z", "b"]}, {"q": {"a": 1, "b": 1}})
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
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, 1), rtol=1e-5)
    # k beyond the corpus is capped.
    assert retrieval.top_k(queries, docs[:4], 9)[1].shape == (20, 4)


def test_descending_id_order_compares_strings():
    # Descending: "b", "a", "9", "10" ("9" > "10" as strings).
    np.testing.assert_array_equal(retrieval.descending_id_order(["9", "10", "b", "a"]), [2, 3, 0, 1])


def test_top_k_orders_equal_scores_by_tie_order():
    docs = np.array([[1, 0], [0, 1], [1, 0], [1, 0]], np.float32)
    queries = np.array([[1, 0]], np.float32)
    _, indices = retrieval.top_k(queries, docs, 4)
    np.testing.assert_array_equal(indices, [[0, 2, 3, 1]])
    _, indices = retrieval.top_k(queries, docs, 4, tie_order=np.array([3, 0, 1, 2]))
    np.testing.assert_array_equal(indices, [[2, 3, 0, 1]])


def _pytrec_eval_means(query_vectors, doc_vectors, query_ids, doc_ids, qrels, ignore_identical_ids):
    """BEIR's scoring: every document's cosine to pytrec_eval, mean per query."""
    pytrec_eval = pytest.importorskip("pytrec_eval")

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    scores = unit(query_vectors) @ unit(doc_vectors).T
    run = {
        q: {d: float(s) for d, s in zip(doc_ids, row) if not (ignore_identical_ids and d == q)}
        for q, row in zip(query_ids, scores)
    }
    per_query = pytrec_eval.RelevanceEvaluator(
        qrels, {"ndcg_cut.10", "recall.1,5,10,100", "recip_rank"}
    ).evaluate(run)
    names = {
        "ndcg@10": "ndcg_cut_10",
        "recall@1": "recall_1",
        "recall@5": "recall_5",
        "recall@10": "recall_10",
        "recall@100": "recall_100",
        "mrr@10": "recip_rank",
    }
    assert set(per_query) == set(qrels)
    return {ours: np.mean([m[theirs] for m in per_query.values()]) for ours, theirs in names.items()}


@pytest.mark.parametrize("ignore_identical_ids", [True, False])
def test_evaluate_retrieval_matches_pytrec_eval(ignore_identical_ids):
    rng = np.random.default_rng(1)
    # Ten documents, so that pytrec_eval's uncut reciprocal rank is MRR@10.
    # "10" and "9", and "a" and "b", are duplicates listed in ascending id
    # order; pytrec_eval ranks each pair the other way round.
    doc_ids = ["10", "9", "a", "b", "q3", "d1", "d2", "d3", "d4", "d5"]
    texts = {"10": "dup1", "9": "dup1", "a": "dup2", "b": "dup2"}
    doc_texts = [texts.get(d, f"text {d}") for d in doc_ids]
    vectors = {t: rng.normal(size=6) for t in set(doc_texts)}
    query_ids = ["q1", "q2", "q3", "q4", "q5", "q6"]
    # q1 and q2 are near a duplicate pair; q3 nearest the document with its id.
    query_vectors = np.stack(
        [
            vectors["dup1"] + 0.1 * rng.normal(size=6),
            vectors["dup2"] + 0.1 * rng.normal(size=6),
            vectors["text q3"] + 0.1 * rng.normal(size=6),
        ]
        + [rng.normal(size=6) for _ in range(3)]
    )
    qrels = {
        "q1": {"10": 1},
        "q2": {"a": 2, "d1": 1},
        "q3": {"d2": 1, "q3": 0},
        "q4": {"d3": 1, "d4": 2, "d5": 1},
        "q5": {"d1": 0, "d2": 0},  # Judged, nothing relevant.
        "q6": {"9": 1},
    }
    corpus = {d: {"title": "", "text": t} for d, t in zip(doc_ids, doc_texts)}
    queries = {q: f"query {q}" for q in query_ids}
    encoder = LookupEncoder({**vectors, **{queries[q]: v for q, v in zip(query_ids, query_vectors)}})
    ours = retrieval.evaluate_retrieval(
        encoder, corpus, queries, qrels, ignore_identical_ids=ignore_identical_ids
    )
    expected = _pytrec_eval_means(
        query_vectors,
        np.stack([vectors[t] for t in doc_texts]),
        query_ids,
        doc_ids,
        qrels,
        ignore_identical_ids,
    )
    assert ours["num_queries"] == 6
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-6), name


def _write_beir(folder, corpus, queries, qrels_lines, split="test"):
    folder.mkdir(exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / f"{split}.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(line + "\n" for line in qrels_lines)
    )


def test_beir_folder_end_to_end(tmp_path):
    corpus = [
        {"_id": "d1", "title": "Paris", "text": "capital of France"},
        {"_id": "d2", "title": "", "text": "a fish"},
        {"_id": "q2", "title": "", "text": "same id as a query"},
    ]
    queries = [
        {"_id": "q1", "text": "french capital"},
        {"_id": "q2", "text": "fish"},
        {"_id": "q3", "text": "unjudged"},
    ]
    _write_beir(tmp_path, corpus, queries, ["q1\td1\t1", "q2\td2\t1"])
    data = retrieval.load_retrieval(str(tmp_path))
    assert data.split == "test"
    assert set(data.queries) == {"q1", "q2"}  # Only judged queries are kept.
    assert data.corpus["d2"] == {"title": "", "text": "a fish"}

    fmt = "title: {title} | text: {text}"
    vectors = {
        "french capital": [1, 0, 0],
        "fish": [0, 1, 0],
        "title: Paris | text: capital of France": [1, 0.1, 0],
        "title:  | text: a fish": [0, 1, 0.5],
        # Would be q2's best match, but shares its id, so is never retrieved.
        "title:  | text: same id as a query": [0, 1, 0],
    }
    encoder = LookupEncoder(vectors)
    metrics = retrieval.evaluate_retrieval(
        encoder, data.corpus, data.queries, data.qrels, query_prompt="q: ", doc_format=fmt, dim=3
    )
    assert metrics["ndcg@10"] == pytest.approx(1.0)
    assert metrics["mrr@10"] == pytest.approx(1.0)
    assert (metrics["num_queries"], metrics["num_docs"]) == (2, 3)
    assert encoder.calls[0] == (["french capital", "fish"], "q: ", 3)
    assert encoder.calls[1][1:] == (None, 3)
    # Kept, the document sharing q2's id ranks first, above q2's relevant one.
    metrics = retrieval.evaluate_retrieval(
        encoder, data.corpus, data.queries, data.qrels, doc_format=fmt, ignore_identical_ids=False
    )
    assert metrics["mrr@10"] == pytest.approx((1 + 1 / 2) / 2)


@pytest.mark.parametrize(
    "corpus_text, qrels_lines, message",
    [
        (
            '{"_id": "d1", "text": "x"}\n{"_id": "d2", "text": \n',
            ["q1\td1\t1"],
            r"corpus\.jsonl:2: not valid JSON",
        ),
        ('{"_id": "d1"}\n', ["q1\td1\t1"], r"corpus\.jsonl:1: missing 'text'"),
        (
            '{"_id": "d1", "text": "x"}\n{"_id": "d2", "title": " ", "text": "\\n"}\n',
            ["q1\td1\t1"],
            r"corpus\.jsonl:2: empty text \(id 'd2'\); drop the line or fill it in$",
        ),
        ('{"_id": "d1", "text": "x"}\n', ["q1\td1"], r"test\.tsv:2: 2 tab-separated"),
        ('{"_id": "d1", "text": "x"}\n', ["q1\td1\thigh"], r"test\.tsv:2: score 'high'"),
        ('{"_id": "d1", "text": "x"}\n', ["q9\td1\t1"], r"not in queries\.jsonl"),
    ],
)
def test_beir_errors_name_file_and_line(tmp_path, corpus_text, qrels_lines, message):
    _write_beir(tmp_path, [], [{"_id": "q1", "text": "hi"}], qrels_lines)
    (tmp_path / "corpus.jsonl").write_text(corpus_text, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        retrieval.load_retrieval(str(tmp_path))


def test_empty_query_names_file_and_line(tmp_path):
    _write_beir(
        tmp_path,
        [{"_id": "d1", "title": "Only a title", "text": ""}],
        [{"_id": "q1", "text": "hi"}, {"_id": "q2", "text": " \t"}],
        ["q1\td1\t1"],
    )
    with pytest.raises(
        UserError,
        match=r"queries\.jsonl:2: empty text"
        r" \(id 'q2'\); drop the line or fill it in$",
    ):
        retrieval.load_retrieval(str(tmp_path))


def test_beir_missing_split_and_non_beir_paths(tmp_path):
    _write_beir(
        tmp_path / "b", [{"_id": "d", "text": "x"}], [{"_id": "q", "text": "y"}], ["q\td\t1"], split="dev"
    )
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
    (tmp_path / "b.json").write_text('{"data": [{"title": "T", "paragraphs": [{"qas": []}]}]}')
    with pytest.raises(UserError, match="article 0 paragraph 0: bad or missing 'context'"):
        retrieval.load_squad(str(tmp_path / "b.json"))


def test_doc_format_rejects_unknown_fields():
    with pytest.raises(UserError, match="only {title} and {text}"):
        retrieval.format_documents({"d": {"text": "x"}}, ["d"], "{body}")
    assert retrieval.format_documents({"d": {"title": "", "text": "x"}}, ["d"]) == ["x"]


def test_squad_dev_a_counts(shared_data):
    data = retrieval.load_retrieval(str(shared_data / "squad" / "dev-a.json"))
    assert (len(data.corpus), len(data.queries), len(data.qrels)) == (913, 4961, 4961)
    assert data.split is None
    assert all(len(judged) == 1 for judged in data.qrels.values())
    first = data.corpus[next(iter(data.qrels["56be4db0acb8001400a502ec"]))]
    assert first["title"] == "Super Bowl 50"
    assert first["text"].startswith("Super Bowl 50 was an American football game")
    assert data.queries["56be4db0acb8001400a502ec"] == (
        "Which NFL team represented the AFC at Super Bowl 50?"
    )


def test_qrels_naming_documents_missing_from_the_corpus_warn(tmp_path):
    corpus = [{"_id": "d1", "title": "", "text": "kept"}]
    queries = [{"_id": "q1", "text": "a"}, {"_id": "q2", "text": "b"}]
    _write_beir(
        tmp_path, corpus, queries, ["q1\td1\t1", "q2\tgone\t1", "q2\talso-gone\t1", "q1\tnot-relevant\t0"]
    )
    with mock.patch.object(retrieval.logging, "warning") as warning:
        data = retrieval.load_retrieval(str(tmp_path))
    assert warning.call_count == 1
    message = warning.call_args.args[0] % warning.call_args.args[1:]
    assert "2 relevant document id(s) are not in corpus.jsonl (e.g. 'also-gone')" in message
    assert data.qrels["q2"] == {"gone": 1, "also-gone": 1}  # Kept: they count as misses.
