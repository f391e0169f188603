"""evaluation.tasks, prompts and labelled CSVs, with a fake encoder (no model)."""

import json

import numpy as np
import pytest

from gecko_jax.errors import UserError
from gecko_jax.evaluation import classification, tasks
from gecko_jax.evaluation.prompts import Prompts, default_prompts


class _RecordingEncoder:
    """Embeds a text as a one-hot of its first letter; records what it saw."""

    def __init__(self):
        self.calls = []

    def encode(self, texts, prompt=None, dim=None, batch_size=None, show_progress=False):
        self.calls.append((list(texts), prompt))
        out = np.zeros((len(texts), 26), np.float32)
        for row, text in enumerate(texts):
            out[row, (ord(text[-1].lower()) - ord("a")) % 26] = 1
        return out[:, :dim] if dim else out


def _beir(folder, docs):
    (folder / "qrels").mkdir()
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, (t, x) in docs.items())
    )
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "find a"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("q\td1\t1\n")


def test_gecko_prompts_and_document_format(tmp_path):
    _beir(tmp_path, {"d1": ("", "text a"), "d2": ("Bee", "text b")})
    encoder = _RecordingEncoder()
    dataset = tasks.load_task_data("retrieval", str(tmp_path))
    metrics = tasks.score_task(encoder, "retrieval", dataset, default_prompts("gecko", "retrieval"))
    assert encoder.calls == [
        (["find a"], "task: question answering | query: "),
        (["title: none | text: text a", "title: Bee | text: text b"], None),
    ]
    assert metrics["ndcg@10"] == metrics["recall@100"] == 1.0


def test_plain_prompts_join_title_and_text(tmp_path):
    _beir(tmp_path, {"d1": ("", "text a"), "d2": ("Bee", "text b")})
    encoder = _RecordingEncoder()
    tasks.score_task(
        encoder,
        "retrieval",
        tasks.load_task_data("retrieval", str(tmp_path)),
        default_prompts("plain", "retrieval"),
    )
    assert encoder.calls[1] == (["text a", "Bee text b"], None)
    assert default_prompts("plain", "sts") == Prompts()
    assert default_prompts("gecko", "clustering").query == "task: clustering | query: "


def test_classification_reads_category_and_scores(tmp_path):
    rows = [("an apple a", "a"), ("a bee b", "b"), ("more a", "a"), ("yes b", "b")]
    for split in ("train", "test"):
        (tmp_path / f"{split}.csv").write_text(
            "id,text,category\n" + "".join(f"{i},{t},{c}\n" for i, (t, c) in enumerate(rows))
        )
    dataset = tasks.load_task_data("classification", str(tmp_path))
    metrics = tasks.score_task(_RecordingEncoder(), "classification", dataset, Prompts())
    assert metrics["accuracy"] == metrics["f1"] == 1.0
    assert (metrics["num_train"], metrics["num_test"], metrics["num_labels"]) == (4, 4, 2)


def test_undersampling_takes_at_most_n_per_label_and_varies():
    labels = ["a"] * 20 + ["b"] * 3
    draws = classification.undersample(labels, n_experiments=3, samples_per_label=4)
    for draw in draws:
        assert sorted(labels[i] for i in draw) == ["a"] * 4 + ["b"] * 3
    assert draws[0] != draws[1]


@pytest.mark.parametrize(
    "content,match",
    [
        ("text,topic\nx,a\n", "'label' or 'category'"),
        ("text,label\n,a\n", r"test\.csv:2: the text is empty"),
        ("text,label\n", "no rows"),
    ],
)
def test_bad_csv_is_a_clear_error(tmp_path, content, match):
    (tmp_path / "train.csv").write_text("text,label\nx,a\ny,b\n")
    (tmp_path / "test.csv").write_text(content)
    with pytest.raises(UserError, match=match):
        tasks.load_task_data("classification", str(tmp_path))


def test_split_does_not_apply_to_clustering(tmp_path):
    (tmp_path / "c.csv").write_text("text,label\nx,a\ny,b\n")
    with pytest.raises(UserError, match="does not apply to clustering"):
        tasks.load_task_data("clustering", str(tmp_path / "c.csv"), split="dev")
