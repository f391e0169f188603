"""Our minilm numbers equal sentence-transformers plus plain metric code.

Each test converts a slice of the bundled data (../shared/data) into the
evaluation format at run time, scores `Encoder.load('minilm')` through
`evaluation.tasks` (what launch/evaluate.py runs), and recomputes the metric
from sentence-transformers embeddings of the same texts with independent
NumPy / SciPy / scikit-learn code.
"""

import collections
import csv

import numpy as np
import pytest
from scipy import stats
from sklearn import cluster, linear_model, metrics

from gecko_jax import Encoder
from gecko_jax.evaluation import bundled_data, tasks
from gecko_jax.evaluation.prompts import default_prompts
from gecko_jax.pretrained_packages import minilm_folder


@pytest.fixture(scope="module")
def encoder():
    return Encoder.load("minilm", batch_size=32)


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top

    model = SentenceTransformer(minilm_folder(), device="cpu")
    return lambda texts: model.encode(list(texts), batch_size=32, normalize_embeddings=True)


def _score(encoder, task, path):
    dataset = tasks.load_task_data(task, str(path))
    return tasks.score_task(encoder, task, dataset, default_prompts(encoder.input_format, task))


def _reference_retrieval(query_vectors, doc_vectors, relevant_doc):
    """nDCG@10, Recall@10/100 and MRR@10 with one relevant document a query."""
    scores = query_vectors @ doc_vectors.T
    # Rank of the relevant document: 1 + documents scoring strictly higher.
    ranks = 1 + (scores > scores[np.arange(len(scores)), relevant_doc][:, None]).sum(1)
    return {
        "ndcg@10": np.mean(np.where(ranks <= 10, 1 / np.log2(ranks + 1), 0)),
        "recall@10": np.mean(ranks <= 10),
        "recall@100": np.mean(ranks <= 100),
        "mrr@10": np.mean(np.where(ranks <= 10, 1 / ranks, 0)),
    }


@pytest.mark.slow
def test_retrieval_on_squad_as_beir(encoder, reference, shared_data, tmp_path):
    # 3 articles' paragraphs (161) and 100 of their questions.
    bundled_data.squad_to_beir(
        str(shared_data / "squad" / "dev-a.json"), str(tmp_path), max_articles=3, max_queries=100
    )
    ours = _score(encoder, "retrieval", tmp_path)
    dataset = tasks.load_task_data("retrieval", str(tmp_path))
    doc_ids = list(dataset.corpus)
    query_ids = list(dataset.qrels)
    # BEIR's and MTEB's document text for models without prompts.
    doc_vectors = reference(f"{d['title']} {d['text']}".strip() for d in dataset.corpus.values())
    query_vectors = reference(dataset.queries[q] for q in query_ids)
    relevant = np.array([doc_ids.index(next(iter(dataset.qrels[q]))) for q in query_ids])
    expected = _reference_retrieval(query_vectors, doc_vectors, relevant)
    print({name: (ours[name], float(value)) for name, value in expected.items()})
    assert ours["num_queries"] == 100 and ours["num_docs"] == len(doc_ids)
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-4), name


def test_sts_on_sick_test(encoder, reference, shared_data, tmp_path):
    lines = (
        (shared_data / "sick" / "SICK_test_annotated.txt")
        .read_text(encoding="utf-8")
        .splitlines(keepends=True)
    )
    path = tmp_path / "SICK_test_annotated.txt"
    path.write_text("".join(lines[:201]), encoding="utf-8")  # Header + 200.
    ours = _score(encoder, "sts", path)
    rows = list(csv.DictReader(lines[:201], delimiter="\t"))
    first = reference(r["sentence_A"] for r in rows)
    second = reference(r["sentence_B"] for r in rows)
    expected = stats.spearmanr(
        (first * second).sum(1), [float(r["relatedness_score"]) for r in rows]
    ).statistic
    print("spearman", ours["spearman"], expected)
    assert ours["num_pairs"] == 200
    assert ours["spearman"] == pytest.approx(expected, abs=1e-4)


def _mteb_draws(labels, n_experiments=10, per_label=8, seed=42):
    """MTEB 2.x undersampling, written out again independently."""
    order, draws = list(range(len(labels))), []
    for _ in range(n_experiments):
        np.random.RandomState(seed).shuffle(order)
        counts, draw = collections.defaultdict(int), []
        for i in order:
            if counts[labels[i]] < per_label:
                draw.append(i)
                counts[labels[i]] += 1
        draws.append(draw)
    return draws


@pytest.mark.slow
def test_classification_on_banking77(encoder, reference, shared_data, tmp_path):
    bundled_data.split_train_test(str(shared_data / "banking77" / "train.csv"), str(tmp_path), max_rows=480)
    ours = _score(encoder, "classification", tmp_path)
    train = list(csv.DictReader(open(tmp_path / "train.csv", encoding="utf-8")))
    test = list(csv.DictReader(open(tmp_path / "test.csv", encoding="utf-8")))
    train_vectors = reference(r["text"] for r in train)
    test_vectors = reference(r["text"] for r in test)
    labels = [r["label"] for r in train]
    accuracies, f1s = [], []
    for draw in _mteb_draws(labels):
        model = linear_model.LogisticRegression(max_iter=100)
        model.fit(train_vectors[draw], [labels[i] for i in draw])
        predicted = model.predict(test_vectors)
        gold = [r["label"] for r in test]
        accuracies.append(metrics.accuracy_score(gold, predicted))
        f1s.append(metrics.f1_score(gold, predicted, average="macro"))
    print("accuracy", ours["accuracy"], np.mean(accuracies))
    assert ours["num_test"] == 120
    assert ours["accuracy"] == pytest.approx(np.mean(accuracies), abs=2e-3)
    assert ours["f1"] == pytest.approx(np.mean(f1s), abs=2e-3)


def test_clustering_on_stackoverflow(encoder, reference, shared_data, tmp_path):
    path = tmp_path / "stackoverflow.csv"
    bundled_data.stackoverflow_to_csv(str(shared_data / "stackoverflow"), str(path), max_rows=300)
    ours = _score(encoder, "clustering", path)
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    labels = [r["label"] for r in rows]
    kmeans = cluster.MiniBatchKMeans(
        n_clusters=len(set(labels)), batch_size=500, n_init="auto", random_state=42
    )
    kmeans.fit(reference(r["text"] for r in rows))
    expected = metrics.v_measure_score(labels, kmeans.labels_)
    print("v_measure", ours["v_measure"], expected)
    assert ours["num_texts"] == 300
    assert ours["v_measure"] == pytest.approx(expected, abs=1e-3)
