"""The mteb adapter: mteb runs our minilm on tasks built from local data.

mteb's own protocol then scores the embeddings, so these tests also check that
our classification and STS numbers equal mteb's on the same data.
"""

import csv

import numpy as np
import pytest

from gecko_jax import Encoder
from gecko_jax.evaluation import bundled_data, tasks
from gecko_jax.evaluation.mteb_adapter import MtebEncoder
from gecko_jax.evaluation.prompts import default_prompts

mteb = pytest.importorskip("mteb")
datasets = pytest.importorskip("datasets")
from mteb.abstasks.classification import AbsTaskClassification  # pylint: disable=g-import-not-at-top,g-bad-import-order
from mteb.abstasks.task_metadata import TaskMetadata  # pylint: disable=g-import-not-at-top,g-bad-import-order

_METADATA = dict(
    description="Banking77 rows from the bundled data, split locally.",
    reference="https://github.com/PolyAI-LDN/task-specific-datasets",
    dataset={"path": "local", "revision": "local"},
    category="t2t",
    eval_splits=["test"],
    eval_langs=["eng-Latn"],
    main_score="accuracy",
    date=("2020-01-01", "2020-12-31"),
    domains=[],
    task_subtypes=[],
    license="cc-by-4.0",
    annotations_creators="human-annotated",
    dialect=[],
    sample_creation="found",
    bibtex_citation="",
    modalities=["text"],
)


def _local_classification_task(folder):
    rows = {
        split: list(csv.DictReader(open(folder / f"{split}.csv", encoding="utf-8")))
        for split in ("train", "test")
    }

    class LocalBanking77(AbsTaskClassification):
        metadata = TaskMetadata(name="LocalBanking77", type="Classification", **_METADATA)

        def load_data(self, num_proc=None, **kwargs):
            del num_proc, kwargs
            self.dataset = datasets.DatasetDict(
                {
                    split: datasets.Dataset.from_dict(
                        {"text": [r["text"] for r in split_rows], "label": [r["label"] for r in split_rows]}
                    )
                    for split, split_rows in rows.items()
                }
            )
            self.data_loaded = True

    return LocalBanking77()


@pytest.fixture(scope="module")
def encoder():
    return Encoder.load("minilm", batch_size=32)


@pytest.mark.slow
def test_mteb_classification_equals_ours(encoder, shared_data, tmp_path):
    bundled_data.split_train_test(str(shared_data / "banking77" / "train.csv"), str(tmp_path), max_rows=240)
    result = mteb.evaluate(
        MtebEncoder(encoder, name="local/minilm"), _local_classification_task(tmp_path), cache=None
    )
    scores = result.task_results[0].scores["test"][0]
    ours = tasks.score_task(
        encoder,
        "classification",
        tasks.load_task_data("classification", str(tmp_path)),
        default_prompts("plain", "classification"),
    )
    print("mteb", scores["accuracy"], "ours", ours["accuracy"])
    assert scores["accuracy"] == pytest.approx(ours["accuracy"], abs=1e-6)
    assert scores["f1"] == pytest.approx(ours["f1"], abs=1e-6)


class _Recorder:
    """A fake encoder that records the prompt of each call."""

    input_format = "gecko"

    def __init__(self):
        self.calls = []

    def encode(self, texts, prompt=None, dim=None, batch_size=None):
        self.calls.append((list(texts), prompt, dim))
        return np.ones((len(texts), 4), np.float32)


class _Meta:
    def __init__(self, task_type):
        self.type = task_type


def test_prompts_follow_task_type_and_side():
    recorder = _Recorder()
    model = MtebEncoder(recorder, dim=2)
    query_batches = [{"text": ["how do tides work?"]}]
    doc_batches = [{"text": ["Tides The moon..."], "body": ["The moon..."], "title": ["Tides"]}]
    model.encode(
        query_batches,
        task_metadata=_Meta("Retrieval"),
        hf_split="test",
        hf_subset="default",
        prompt_type=mteb.types.PromptType.query,
    )
    model.encode(
        doc_batches,
        task_metadata=_Meta("Retrieval"),
        hf_split="test",
        hf_subset="default",
        prompt_type=mteb.types.PromptType.document,
    )
    model.encode(query_batches, task_metadata=_Meta("Clustering"), hf_split="test", hf_subset="default")
    assert recorder.calls == [
        (["how do tides work?"], "task: question answering | query: ", 2),
        (["title: Tides | text: The moon..."], None, 2),
        (["how do tides work?"], "task: clustering | query: ", 2),
    ]
    np.testing.assert_allclose(model.similarity(np.eye(2), np.eye(2)), np.eye(2))
