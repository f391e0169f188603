"""AligneR retrieval: pruned search and refinement against NumPy, adaptation, the CLI."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from aligner_loss_test import numpy_sim  # pylint: disable=g-bad-import-order
from gecko_jax import Encoder
from gecko_jax.data.vocabularies import get_vocabulary
from gecko_jax.errors import UserError
from gecko_jax.evaluation import aligner_retrieval
from gecko_jax.evaluation import retrieval
from gecko_jax.evaluation import tasks
from gecko_jax.evaluation.prompts import Prompts
from gecko_jax.losses.alignment import Alignment
from gecko_jax.models.registry import build_tower
from workdir_helpers import make_workdir, random_params, tiny_bert_config  # pylint: disable=g-bad-import-order

REPO = pathlib.Path(__file__).resolve().parents[1]


def _unit(rng, n, d):
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _reference_ranking(
    query, query_salience, docs, doc_saliences, prune_query, prune_doc, token_k, alignment, excluded
):
    """Documents fetched by the pruned search, ranked by sim over all tokens."""

    def kept(saliences, fraction):
        count = max(int(np.ceil(round(fraction * len(saliences), 9))), 1)
        return sorted(sorted(range(len(saliences)), key=lambda t: -saliences[t])[:count])

    index = [(j, doc[t]) for j, (doc, u) in enumerate(zip(docs, doc_saliences)) for t in kept(u, prune_doc)]
    fetched = set()
    for t in kept(query_salience, prune_query):
        sims = [float(query[t] @ vector) for _, vector in index]
        fetched |= {index[r][0] for r in np.argsort(sims)[::-1][:token_k]}
    fetched.discard(excluded)
    ones = np.ones(len(query))
    scores = {
        j: numpy_sim(
            query,
            ones,
            query_salience,
            docs[j],
            np.ones(len(docs[j])),
            doc_saliences[j],
            alignment.kind,
            alignment.value,
        )
        for j in fetched
    }
    return sorted(fetched, key=lambda j: (-scores[j], j)), scores


def test_most_salient_keeps_the_top_fraction_in_order():
    u = np.array([0.1, 0.9, 0.5, 0.9, 0.0, 0.3])
    np.testing.assert_array_equal(aligner_retrieval.most_salient(u, 0.5), [1, 2, 3])
    np.testing.assert_array_equal(aligner_retrieval.most_salient(u, 0.2), [1, 3])
    np.testing.assert_array_equal(aligner_retrieval.most_salient(u, 0.1), [1])  # at least one
    np.testing.assert_array_equal(aligner_retrieval.most_salient(u, 1.0), np.arange(6))
    # Ties keep the earlier token; 0.1 * 30 keeps 3, not 4.
    assert aligner_retrieval.most_salient(np.zeros(30), 0.1).tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "alignment", [Alignment("topk", 1), Alignment("topk", 2), Alignment("topp", 40)], ids=lambda a: a.name
)
def test_search_matches_numpy_reference(monkeypatch, alignment):
    # Small blocks, so that refinement runs over several padded blocks.
    monkeypatch.setattr(aligner_retrieval, "_CANDIDATE_BLOCK", 5)
    monkeypatch.setattr(aligner_retrieval, "_MIN_BLOCK", 2)
    rng = np.random.default_rng(0)
    docs = [_unit(rng, n, 6) for n in rng.integers(2, 9, size=25)]
    doc_saliences = [rng.uniform(size=len(d)).astype(np.float32) for d in docs]
    queries = [_unit(rng, n, 6) for n in rng.integers(2, 6, size=6)]
    query_saliences = [rng.uniform(size=len(q)).astype(np.float32) for q in queries]
    prune_query, prune_doc, token_k = 0.5, 0.4, 6
    index = aligner_retrieval.build_pruned_index(docs, doc_saliences, prune_doc)
    assert len(index.vectors) == sum(int(np.ceil(0.4 * len(d))) for d in docs)
    found = aligner_retrieval.candidates(queries, query_saliences, index, prune_query, token_k)
    excluded = np.array([4, -1, -1, -1, -1, -1])
    rankings = aligner_retrieval.rank(
        aligner_retrieval.pad_tokens(queries, query_saliences),
        aligner_retrieval.pad_tokens(docs, doc_saliences),
        found,
        range(len(queries)),
        alignment,
        100,
        excluded,
        None,
    )
    unreached = 0
    for i, ranking in enumerate(rankings):
        expected, scores = _reference_ranking(
            queries[i],
            query_saliences[i],
            docs,
            doc_saliences,
            prune_query,
            prune_doc,
            token_k,
            alignment,
            excluded[i],
        )
        assert sorted(ranking.tolist()) == sorted(expected)
        np.testing.assert_allclose([scores[j] for j in ranking], [scores[j] for j in expected], atol=1e-5)
        unreached += len(docs) - len(expected)
    assert unreached > 0  # Pruning and k' left documents out.
    assert 4 not in rankings[0]


class _FakeEncoder:
    """Token vectors and saliences looked up by text."""

    def __init__(self, tokens):
        self.tokens = tokens

    def encode_tokens_and_saliences(
        self, texts, side, prompt=None, dim=None, batch_size=None, show_progress=None
    ):
        del side, prompt, dim, batch_size, show_progress
        return ([self.tokens[t][0] for t in texts], [self.tokens[t][1] for t in texts])


def _spread_or_peaked():
    """Doc 'peak' has one token at 0.9 to the query; 'spread' four at 0.7.

    top1 prefers 'peak' (0.9 > 0.7), any wider alignment 'spread' (topk:2 gives
    'peak' (0.9 + 0) / 2). The qrels call 'spread' relevant.
    """
    e = np.eye(12, dtype=np.float32)
    peak = np.stack([0.9 * e[0] + np.sqrt(0.19) * e[1], e[2], e[3], e[4]])
    spread = np.stack([0.7 * e[0] + np.sqrt(0.51) * e[5 + i] for i in range(4)])
    tokens = {
        "peak": (peak, np.ones(4, np.float32)),
        "spread": (spread, np.ones(4, np.float32)),
        "query": (e[:1], np.ones(1, np.float32)),
    }
    corpus = {"peak": {"text": "peak"}, "spread": {"text": "spread"}}
    queries = {f"q{i}": "query" for i in range(5)}
    qrels = {f"q{i}": {"spread": 1} for i in range(5)}
    return _FakeEncoder(tokens), corpus, queries, qrels


def test_adaptation_picks_the_first_best_alignment_and_scores_the_other_queries():
    encoder, corpus, queries, qrels = _spread_or_peaked()
    fixed = aligner_retrieval.evaluate_aligner_retrieval(encoder, corpus, queries, qrels)
    assert fixed["alignment"] == "top1" and fixed["num_queries"] == 5
    assert fixed["ndcg@10"] == pytest.approx(1 / np.log2(3))
    adapted = aligner_retrieval.evaluate_aligner_retrieval(
        encoder, corpus, queries, qrels, options=aligner_retrieval.SearchOptions(adapt_queries=2)
    )
    assert adapted["alignment"] == "topk:2" and adapted["adaptation_queries"] == 2
    assert adapted["num_queries"] == 3 and adapted["ndcg@10"] == 1.0
    assert adapted["adaptation.top1.ndcg@10"] == pytest.approx(1 / np.log2(3))
    # 2% of 4 tokens is less than one: top-p aligns one token, as top1 does.
    assert adapted["adaptation.topp:2.ndcg@10"] == pytest.approx(1 / np.log2(3))
    assert adapted["adaptation.topk:8.ndcg@10"] == 1.0
    assert (adapted["num_index_tokens"], adapted["num_doc_tokens"]) == (8, 8)


def test_bad_options_say_which_flag_to_change():
    encoder, corpus, queries, qrels = _spread_or_peaked()
    with pytest.raises(UserError, match="--adapt_alignment=5 leaves none of the 5"):
        aligner_retrieval.evaluate_aligner_retrieval(
            encoder, corpus, queries, qrels, options=aligner_retrieval.SearchOptions(adapt_queries=5)
        )
    for options, flag in (
        (dict(prune_doc=0.0), "--prune_doc=0.0"),
        (dict(prune_query=1.5), "--prune_query=1.5"),
        (dict(token_k=0), "--token_k must be positive"),
    ):
        with pytest.raises(UserError, match=flag):
            aligner_retrieval.SearchOptions(**options).check()


@pytest.fixture(scope="module")
def salience_model():
    """A random multi-vector tiny BERT with salience heads (plain input format)."""
    config = tiny_bert_config(
        multi_vector_dim=8, salience_heads=True, dropout_rate=0.0, attention_dropout_rate=0.0
    )
    config.data.format = "plain"
    params = random_params(config)
    for head in params["saliences"].values():
        head["bias"] = np.ones_like(head["bias"])
    return config, params


def test_encoder_gives_vectors_and_each_heads_saliences(salience_model):
    config, params = salience_model
    encoder = Encoder(
        build_tower(config.model), params, get_vocabulary("minilm"), max_length=24, batch_size=2
    )
    texts = ["a short one", "a somewhat longer text than the others", "hi"]
    vectors = encoder.encode_tokens(texts)
    query_vectors, query_saliences = encoder.encode_tokens_and_saliences(texts, "query")
    doc_vectors, doc_saliences = encoder.encode_tokens_and_saliences(texts, "document", dim=4)
    lengths = [len(encoder.vocabulary.encode(t)) + 2 for t in texts]
    assert [v.shape for v in vectors] == [(n, 8) for n in lengths]
    assert [u.shape for u in doc_saliences] == [(n,) for n in lengths]
    for v, q, d in zip(vectors, query_vectors, doc_vectors):
        np.testing.assert_array_equal(v, q)
        np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, rtol=1e-5)
    # Each head's gate keeps about its own share: alpha^q = 0.5, alpha^d = 0.4.
    for saliences in (query_saliences, doc_saliences):
        assert all(np.all(u >= 0) for u in saliences)
    assert not np.allclose(query_saliences[1], doc_saliences[1])
    with pytest.raises(UserError, match="between 1 and 8"):
        encoder.encode_tokens(texts, dim=9)


def test_score_task_retrieves_by_aligner_for_a_salience_model(salience_model, tmp_path):
    config, params = salience_model
    # Random heads may weigh a query's tokens where the document head gives
    # their copies no weight, and sim is then 0; one head for both sides
    # makes the most salient tokens of the query and its copy the same.
    params = dict(
        params,
        saliences={
            "query_salience": params["saliences"]["doc_salience"],
            "doc_salience": params["saliences"]["doc_salience"],
        },
    )
    encoder = Encoder(
        build_tower(config.model), params, get_vocabulary("minilm"), max_length=24, batch_size=4
    )
    texts = {
        f"d{i}": text
        for i, text in enumerate(
            [
                "Paris is the capital of France.",
                "Salmon swim upstream to spawn.",
                "Python is a programming language.",
                "The moon orbits the earth.",
            ]
        )
    }
    corpus = {i: {"text": t} for i, t in texts.items()}
    dataset = retrieval.RetrievalDataset(
        corpus,
        {"q0": texts["d0"], "q2": texts["d2"]},
        {"q0": {"d0": 1}, "q2": {"d2": 1}},
        str(tmp_path),
        None,
    )
    metrics = tasks.score_task(
        encoder,
        "retrieval",
        dataset,
        Prompts(),
        aligner_search=aligner_retrieval.SearchOptions(prune_doc=0.4),
    )
    # Each query is its document's own text: its tokens find themselves.
    assert metrics["alignment"] == "top1" and metrics["mrr@10"] == 1.0
    assert metrics["num_index_tokens"] < 0.5 * metrics["num_doc_tokens"]


def _evaluate(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, str(REPO / "launch" / "evaluate.py"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_refuses_a_bad_alignment_in_one_line(tmp_path):
    (tmp_path / "data").mkdir()
    result = _evaluate(
        "--model=minilm", "--task=retrieval", f"--data={tmp_path / 'data'}", "--alignment=top2"
    )
    assert result.returncode != 0
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "--alignment='top2'; use top1, topk:K with K >= 1, or topp:P with P a percentage of "
            "the document's tokens in (0, 100], e.g. topp:1.5"
        )
    ), result.stderr


@pytest.mark.slow
def test_cli_refuses_aligner_flags_for_a_model_without_saliences(tmp_path):
    config = tiny_bert_config(multi_vector_dim=8)
    workdir = make_workdir(tmp_path / "xtr", config, {1: random_params(config)})
    (tmp_path / "beir" / "qrels").mkdir(parents=True)
    (tmp_path / "beir" / "corpus.jsonl").write_text('{"_id": "d", "text": "a b"}\n')
    (tmp_path / "beir" / "queries.jsonl").write_text('{"_id": "q", "text": "a"}\n')
    (tmp_path / "beir" / "qrels" / "test.tsv").write_text("q\td\t1\n")
    result = _evaluate(
        f"--model={workdir}", "--task=retrieval", f"--data={tmp_path / 'beir'}", "--prune_doc=0.4"
    )
    assert result.returncode != 0
    assert "--prune_doc is for AligneR models" in result.stderr, result.stderr
    ok = _evaluate(f"--model={workdir}", "--task=retrieval", f"--data={tmp_path / 'beir'}")
    assert ok.returncode == 0 and "alignment" not in json.loads(ok.stdout), ok.stderr
