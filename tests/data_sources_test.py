"""Tests for gecko_jax.data.sources: the bundled set, SQuAD and SNLI readers."""

import collections
import json
import os

import pytest

from gecko_jax.data import jsonl
from gecko_jax.data import sources
from gecko_jax.errors import UserError

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
needs_shared_data = pytest.mark.skipif(
    not os.path.isdir(SHARED_DATA), reason="shared data folder not present"
)


def _write_squad(path, articles):
    data = {
        "version": "1.1",
        "data": [
            {
                "title": title,
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {"id": f"{title}-{i}-{j}", "question": q, "answers": []}
                            for j, q in enumerate(questions)
                        ],
                    }
                    for i, (context, questions) in enumerate(paragraphs)
                ],
            }
            for title, paragraphs in articles
        ],
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def test_bundled_tiny_set():
    examples = sources.tiny()
    assert len(examples) == 64
    tasks = collections.Counter(ex["task"] for ex in examples)
    assert {"question answering", "fact checking", "semantic similarity"} <= set(tasks)
    assert sum("negative" in ex for ex in examples) >= 48
    assert 0 < sum("title" in ex for ex in examples) < 64
    assert len({ex["id"] for ex in examples}) == 64
    assert os.path.isfile(sources.bundled_path())


def test_squad_pairs_titles_and_negatives(tmp_path):
    path = _write_squad(
        tmp_path / "squad.json",
        [
            (
                "Financial_crisis_of_2007%E2%80%9308",
                [("Para zero. ", ["Q0a ", "Q0b"]), ("Para one.", ["Q1"]), ("Para two.", ["Q2"])],
            ),
            ("Lonely", [("Only paragraph.", ["Q3"])]),
        ],
    )
    examples = sources.squad(path, seed=3)
    assert [ex["query"] for ex in examples] == ["Q0a", "Q0b", "Q1", "Q2", "Q3"]
    first = examples[0]
    assert first["positive"] == "Para zero."
    assert first["title"] == "Financial crisis of 2007\u201308"
    assert first["task"] == "question answering" and first["symmetric"] is False
    assert first["id"] == "Financial_crisis_of_2007%E2%80%9308-0-0"
    for ex in examples[:4]:
        assert ex["negative"] in ("Para zero.", "Para one.", "Para two.")
        assert ex["negative"] != ex["positive"]
        assert ex["negative_title"] == ex["title"]
    assert "negative" not in examples[4]  # A one-paragraph article has no other paragraph.
    assert sources.squad(path, seed=3) == examples
    assert all("negative" not in ex for ex in sources.squad(path, hard_negatives=False))
    assert len(sources.squad(path, max_examples=2)) == 2


def test_squad_negatives_change_with_seed(tmp_path):
    path = _write_squad(
        tmp_path / "squad.json",
        [("Art", [(f"Paragraph {i}.", [f"Q{i}-{j}" for j in range(5)]) for i in range(10)])],
    )
    negatives = {seed: [ex["negative"] for ex in sources.squad(path, seed=seed)] for seed in (0, 1)}
    assert negatives[0] != negatives[1]


def test_squad_bad_files(tmp_path):
    with pytest.raises(UserError, match="SQuAD file not found.*--config.data.data_dir"):
        sources.squad(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"paragraphs": []}]}', encoding="utf-8")
    with pytest.raises(UserError, match="not SQuAD v1.1 JSON"):
        sources.squad(str(bad))


def _write_snli(folder, rows, split="dev"):
    folder.mkdir(exist_ok=True)
    for index, name in enumerate(("s1", "s2", "labels")):
        (folder / f"{name}.{split}").write_text("".join(f"{row[index]} \n" for row in rows), encoding="utf-8")
    return str(folder)


def test_snli_groups_by_premise(tmp_path):
    folder = _write_snli(
        tmp_path / "snli",
        [
            ("A man sleeps .", "A person rests .", "entailment"),
            ("A man sleeps .", "A man runs .", "contradiction"),
            ("A man sleeps .", "A man is tired .", "neutral"),
            ("A man sleeps .", "Someone naps .", "entailment"),
            ("Two dogs play .", "Animals play .", "entailment"),  # No contradiction: dropped.
            ("A girl sings .", "Nobody sings .", "contradiction"),
            ("A girl sings .", "A child sings .", "entailment"),
        ],
    )
    examples = sources.snli(folder)
    assert examples == [
        {
            "query": "A man sleeps .",
            "positive": "A person rests .",
            "negative": "A man runs .",
            "task": "semantic similarity",
            "symmetric": True,
            "id": "snli-dev-0",
        },
        {
            "query": "A girl sings .",
            "positive": "A child sings .",
            "negative": "Nobody sings .",
            "task": "semantic similarity",
            "symmetric": True,
            "id": "snli-dev-2",
        },
    ]


def test_snli_mismatched_files(tmp_path):
    folder = _write_snli(tmp_path / "snli", [("a", "b", "entailment")])
    (tmp_path / "snli" / "labels.dev").write_text("entailment\ncontradiction\n", encoding="utf-8")
    with pytest.raises(UserError, match="different line counts"):
        sources.snli(folder)
    with pytest.raises(UserError, match="SNLI file not found"):
        sources.snli(folder, split="train")


@needs_shared_data
def test_real_squad_first_rows():
    examples = sources.squad(os.path.join(SHARED_DATA, "squad", "train-du-split.json"), max_examples=300)
    assert len(examples) == 300
    assert examples[0]["title"] == "University of Notre Dame"
    assert all(ex["negative"] != ex["positive"] for ex in examples)
    assert all(jsonl.validate_example(ex) == ex for ex in examples)


@needs_shared_data
def test_real_snli_dev_triplet_count():
    # PROVENANCE.md: grouping SNLI dev by premise gives 2943 triplets.
    examples = sources.snli(os.path.join(SHARED_DATA, "snli"))
    assert len(examples) == 2943
    assert len({ex["query"] for ex in examples}) == 2943
