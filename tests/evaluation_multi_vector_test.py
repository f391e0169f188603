"""Multi-vector (XTR) retrieval: search against a NumPy reference, the encoder, the CLI."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from gecko_jax import Encoder
from gecko_jax import checkpoint_io
from gecko_jax.errors import UserError
from gecko_jax.evaluation import multi_vector
from gecko_jax.config_base import evaluator
from gecko_jax.data.vocabularies import get_vocabulary
from gecko_jax.evaluation import retrieval
from gecko_jax.models.registry import build_tower
from gecko_jax.training.evaluators import Evaluators
from workdir_helpers import make_workdir, random_params, tiny_bert_config  # pylint: disable=g-bad-import-order

REPO = pathlib.Path(__file__).resolve().parents[1]
TOKEN_DIM = 8


def _unit(rng, n, d):
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _reference_scores(query, docs, token_k):
    """XTR's inference score f_XTR' (arXiv 2304.01982) of every candidate, token by token."""
    doc_of = np.concatenate([np.full(len(d), j) for j, d in enumerate(docs)])
    sims = query.astype(np.float64) @ np.concatenate(docs).astype(np.float64).T
    retrieved = [np.argsort(-row)[:token_k] for row in sims]
    candidates = sorted({doc_of[t] for tokens in retrieved for t in tokens})
    scores = {}
    for j in candidates:
        total = 0.0
        for row, tokens in zip(sims, retrieved):
            own = [row[t] for t in tokens if doc_of[t] == j]
            total += max(own) if own else row[tokens[-1]]  # m_i: the k'-th score.
        scores[j] = total / len(query)
    return scores


def test_xtr_scores_by_hand():
    # Token 0 retrieved doc 0 (0.9) and doc 1 (0.5); token 1 only doc 0, so
    # doc 1 gets token 1's k'-th score, 0.7, in its place.
    scores = np.array([[0.9, 0.5], [0.8, 0.7]], np.float32)
    docs = np.array([[0, 1], [0, 0]])
    candidates, doc_scores = multi_vector.xtr_scores(scores, docs)
    np.testing.assert_array_equal(candidates, [0, 1])
    np.testing.assert_allclose(doc_scores, [0.85, 0.6], rtol=1e-6)


def test_search_matches_numpy_reference(monkeypatch):
    # Small blocks, so that queries are grouped and the index is searched in
    # several blocks.
    monkeypatch.setattr(multi_vector, "_QUERY_TOKEN_BLOCK", 7)
    monkeypatch.setattr(retrieval, "_DOC_BLOCK", 13)
    rng = np.random.default_rng(0)
    docs = [_unit(rng, n, 6) for n in rng.integers(1, 9, size=30)]
    queries = [_unit(rng, n, 6) for n in rng.integers(1, 6, size=9)]
    token_k = 10
    index = multi_vector.build_token_index(docs)
    excluded = np.array([3] + [-1] * 8)
    rankings = multi_vector.search(queries, index, token_k, k=100, excluded=excluded)
    imputed = 0
    for i, (query, ranking) in enumerate(zip(queries, rankings)):
        expected = _reference_scores(query, docs, token_k)
        expected.pop(excluded[i], None)
        assert sorted(ranking.tolist()) == sorted(expected)
        got = multi_vector.xtr_scores(*multi_vector.retrieve_tokens(query, index, token_k))
        got = dict(zip(got[0].tolist(), got[1].tolist()))
        for j, score in expected.items():
            assert got[j] == pytest.approx(score, abs=1e-5)
        assert np.all(np.diff([expected[j] for j in ranking]) <= 1e-5)  # Best first.
        # Candidates that some query token did not retrieve: m_i stood in.
        _, token_docs = multi_vector.retrieve_tokens(query, index, token_k)
        imputed += sum(not all(j in row for row in token_docs) for j in expected)
    assert imputed > 0
    assert 3 not in rankings[0]


class _OneTokenEncoder:
    """Fake multi-vector encoder: one fixed token vector per text."""

    def __init__(self, vectors):
        self.vectors = vectors

    def encode_tokens(self, texts, prompt=None, dim=None, batch_size=None, show_progress=None):
        return [np.array([self.vectors[t]], np.float32) for t in texts]


@pytest.mark.parametrize("ignore_identical_ids, q2_reciprocal_rank", [(True, 1.0), (False, 1 / 2)])
def test_evaluation_ranks_like_pytrec_eval(ignore_identical_ids, q2_reciprocal_rank):
    # One token a text, all retrieved: f_XTR' is the cosine. Documents "10"
    # and "9" are duplicates; pytrec_eval puts "9" first ("9" > "10").
    corpus = {"10": {"text": "dup"}, "9": {"text": "dup"}, "x": {"text": "other"}, "q2": {"text": "q2 doc"}}
    queries = {"q1": "dup", "q2": "near q2 doc", "q3": "other"}
    qrels = {"q1": {"10": 1}, "q2": {"x": 1}, "q3": {"x": 0}}  # Judged, nothing relevant: 0, but averaged.
    encoder = _OneTokenEncoder(
        {"dup": [1, 0, 0], "other": [0, 1, 0], "q2 doc": [0, 0, 1], "near q2 doc": [0, 0.6, 0.8]}
    )
    metrics = multi_vector.evaluate_multi_vector_retrieval(
        encoder, corpus, queries, qrels, token_k=4, ignore_identical_ids=ignore_identical_ids
    )
    assert metrics["num_queries"] == 3
    assert metrics["mrr@10"] == pytest.approx((1 / 2 + q2_reciprocal_rank + 0) / 3)
    assert metrics["recall@1"] == pytest.approx((0 + (q2_reciprocal_rank == 1) + 0) / 3)
    assert metrics["ndcg@10"] == pytest.approx(
        (1 / np.log2(3) + 1 / np.log2(1 + 1 / q2_reciprocal_rank) + 0) / 3
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A randomly initialised multi-vector tiny BERT that sees plain texts."""
    config = tiny_bert_config(multi_vector_dim=TOKEN_DIM, dropout_rate=0.0, attention_dropout_rate=0.0)
    config.data.format = "plain"
    return make_workdir(tmp_path_factory.mktemp("xtr"), config, {1: random_params(config)})


def test_encoder_gives_unit_token_vectors_without_padding(workdir):
    encoder = Encoder.load(workdir, batch_size=2)
    texts = ["a short one", "a somewhat longer text than the others", "hi"]
    tokens = encoder.encode_tokens(texts)
    lengths = [len(encoder.vocabulary.encode(t)) + 2 for t in texts]  # bos, eos
    assert [t.shape for t in tokens] == [(n, TOKEN_DIM) for n in lengths]
    for t in tokens:
        np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, rtol=1e-5)
    # Batching and padding do not change a text's vectors.
    np.testing.assert_allclose(encoder.encode_tokens(["hi"])[0], tokens[2], atol=1e-5)
    prefix = encoder.encode_tokens(texts[:1], dim=4)[0]
    np.testing.assert_allclose(np.linalg.norm(prefix, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(UserError, match="embed with Encoder.encode_tokens"):
        encoder.encode(texts)


def _write_beir_folder(folder):
    """Two queries over four documents, each query its document's own text.

    Every query token retrieves its own copy at similarity 1, so even random
    weights rank the document first.
    """
    texts = {
        "d1": "Paris is the capital and largest city of France.",
        "d2": "Salmon are fish that swim upstream to spawn.",
        "d3": "Python is a programming language.",
        "d4": "The moon orbits the earth every month.",
    }
    queries = {"q1": texts["d1"], "q2": texts["d3"]}
    folder.mkdir(exist_ok=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "text": x}) + "\n" for i, x in texts.items())
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": i, "text": x}) + "\n" for i, x in queries.items())
    )
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("q1\td1\t1\nq2\td3\t1\n")


def test_evaluate_cli_scores_a_multi_vector_model(workdir, tmp_path):
    _write_beir_folder(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "launch" / "evaluate.py"),
            f"--model={workdir}",
            "--task=retrieval",
            f"--data={tmp_path}",
            "--token_k=3",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert (metrics["num_queries"], metrics["num_docs"]) == (2, 4)
    assert metrics["num_doc_tokens"] > 4 * 2
    assert metrics["recall@1"] == metrics["mrr@10"] == metrics["ndcg@10"] == 1.0


class _Writer:
    def scalars(self, step, values, prefix):
        del step, values, prefix


def test_in_training_evaluation_scores_retrieval_and_skips_the_rest(workdir, tmp_path, capsys):
    _write_beir_folder(tmp_path / "beir")
    config, params = checkpoint_io.restore_params(str(workdir))
    config.data.data_dir = str(tmp_path)
    config.evals.beir = evaluator("retrieval", "beir")
    config.evals.sts = evaluator("sts", "sts.tsv")
    (tmp_path / "sts.tsv").write_text("g\ts\t2012\t1\t5.0\ta b\ta b\ng\ts\t2012\t2\t1.0\ta\tc\n")
    evaluators = Evaluators(
        config, build_tower(config.model), get_vocabulary(config.model.vocab), str(tmp_path / "run")
    )
    assert "eval: skipping sts" in capsys.readouterr().out
    results = evaluators.run(0, params, _Writer())
    assert results["beir.ndcg@10"] == 1.0
    assert not any(k.startswith("sts.") for k in results)
