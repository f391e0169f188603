"""Tests for launch/evaluate.py, run as a user would, in a subprocess."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _evaluate(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # Works whether or not the package is installed (editable) in the venv.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, str(REPO / "launch" / "evaluate.py"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for fragment in fragments:
        assert fragment in last


def test_sts_with_minilm_prints_one_json_object(shared_data, tmp_path):
    # 300 rows keep the test fast: the first 250 and the last 50 of the real
    # STS-B dev file, which hold the rows with extra columns.
    lines = (shared_data / "stsb" / "sts-dev.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    data = tmp_path / "sts-dev-300.csv"
    data.write_text("".join(lines[:250] + lines[-50:]), encoding="utf-8")
    output = tmp_path / "result.json"
    result = _evaluate("--model=minilm", "--task=sts", f"--data={data}", f"--output={output}")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)  # Fails unless stdout is one object.
    assert metrics["model"] == "minilm"
    assert metrics["task"] == "sts"
    assert metrics["data"] == str(data)
    assert metrics["split"] is None and metrics["dim"] is None
    assert metrics["num_pairs"] == 300
    # sentence-transformers with the same weights gives these on the same rows.
    assert metrics["spearman"] == pytest.approx(0.9227, abs=0.003)
    assert metrics["cosine_spearman"] == metrics["spearman"]
    assert metrics["pearson"] == pytest.approx(0.9130, abs=0.003)
    assert json.loads(output.read_text()) == metrics


def test_retrieval_on_a_beir_folder(tmp_path):
    docs = {
        "d1": ("Paris", "Paris is the capital and largest city of France."),
        "d2": ("Salmon", "Salmon are fish that swim upstream to spawn."),
        "d3": ("Python", "Python is a programming language."),
    }
    queries = {"q1": "What is the capital of France?", "q2": "Which fish swims up rivers?"}
    (tmp_path / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, (t, x) in docs.items())
    )
    (tmp_path / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": i, "text": x}) + "\n" for i, x in queries.items())
    )
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    result = _evaluate(
        "--model=minilm",
        "--task=retrieval",
        f"--data={tmp_path}",
        "--split=dev",
        "--dim=128",
        "--doc_format=title: {title} | text: {text}",
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert (metrics["split"], metrics["dim"]) == ("dev", 128)
    assert (metrics["num_queries"], metrics["num_docs"]) == (2, 3)
    assert metrics["ndcg@10"] == metrics["mrr@10"] == metrics["recall@1"] == 1.0


def test_unknown_task_is_a_one_line_error(tmp_path):
    result = _evaluate("--model=minilm", "--task=bogus", f"--data={tmp_path}")
    _assert_one_line_error(result, "'bogus'", "tasks: retrieval, sts, classification, clustering")


def test_classification_csv_without_label_column_is_a_one_line_error(tmp_path):
    for split in ("train", "test"):
        (tmp_path / f"{split}.csv").write_text("text,topic\nhello,a\n", encoding="utf-8")
    result = _evaluate("--model=minilm", "--task=classification", f"--data={tmp_path}")
    _assert_one_line_error(result, "train.csv:1", "'label' or 'category'")


def _tiny_clustering_csv(path):
    path.write_text(
        "text,label\n"
        + "".join(
            f"{text},{label}\n"
            for text, label in [
                ("cats purr and meow", "pets"),
                ("dogs bark at night", "pets"),
                ("kittens chase yarn", "pets"),
                ("stocks fell sharply", "money"),
                ("the bank raised rates", "money"),
                ("bond yields climbed", "money"),
            ]
        ),
        encoding="utf-8",
    )


def test_suite_prints_a_table_and_writes_json(tmp_path):
    data = tmp_path / "tiny.csv"
    _tiny_clustering_csv(data)
    suite = tmp_path / "suite.json"
    suite.write_text(
        json.dumps(
            [
                {"name": "tiny", "task": "clustering", "data": str(data)},
                {"name": "tiny-64", "task": "clustering", "data": str(data), "dim": 64},
            ]
        )
    )
    output = tmp_path / "out.json"
    result = _evaluate("--model=minilm", f"--suite={suite}", f"--output={output}")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "| evaluation | task | dim | metrics |"
    assert lines[2].startswith("| tiny | clustering | full | v_measure ")
    assert lines[3].startswith("| tiny-64 | clustering | 64 | v_measure ")
    written = json.loads(output.read_text())
    assert [r["name"] for r in written] == ["tiny", "tiny-64"]
    assert all(0 <= r["v_measure"] <= 1 and r["num_texts"] == 6 for r in written)


def test_bad_suite_entry_is_a_one_line_error(tmp_path):
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps([{"task": "sts"}]))
    result = _evaluate("--model=minilm", f"--suite={suite}")
    _assert_one_line_error(result, "entry 0", "'task' and 'data'")


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"task": "sts", "data": 5}, "'data' must be a string, got 5"),
        ({"task": "sts", "data": ".", "split": 1}, "'split' must be a string, got 1"),
        ({"task": "sts", "data": ".", "dim": True}, "'dim' must be an integer, got true"),
        (
            {"task": "retrieval", "data": ".", "ignore_identical_ids": "no"},
            "'ignore_identical_ids' must be true or false, got \"no\"",
        ),
    ],
)
def test_suite_value_of_the_wrong_type_is_a_one_line_error(tmp_path, entry, message):
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps([{"task": "sts", "data": "."}, entry]))
    result = _evaluate("--model=minilm", f"--suite={suite}")
    _assert_one_line_error(result, "entry 1: " + message)


def test_identical_ids_flag_clashes_with_suite(tmp_path):
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps([{"task": "retrieval", "data": "."}]))
    result = _evaluate("--model=minilm", f"--suite={suite}", "--noignore_identical_ids")
    _assert_one_line_error(result, "drop --ignore_identical_ids")


def test_suite_entries_choose_whether_identical_ids_are_ignored(tmp_path):
    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True)
    question = "What is the capital of France?"
    # Document "q1" is query q1 itself, so ranks first unless ignored.
    (data / "corpus.jsonl").write_text(
        "".join(
            json.dumps({"_id": i, "text": x}) + "\n"
            for i, x in [
                ("d1", "Paris is the capital and largest city of France."),
                ("q1", question),
                ("d2", "Salmon are fish that swim upstream."),
            ]
        )
    )
    (data / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": question}) + "\n")
    (data / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    suite = tmp_path / "suite.json"
    suite.write_text(
        json.dumps(
            [
                {"name": "ignored", "task": "retrieval", "data": str(data)},
                {"name": "kept", "task": "retrieval", "data": str(data), "ignore_identical_ids": False},
            ]
        )
    )
    output = tmp_path / "out.json"
    result = _evaluate("--model=minilm", f"--suite={suite}", f"--output={output}")
    assert result.returncode == 0, result.stderr
    ignored, kept = json.loads(output.read_text())
    assert (ignored["name"], ignored["mrr@10"]) == ("ignored", 1.0)
    assert (kept["name"], kept["mrr@10"]) == ("kept", 0.5)


def test_missing_data_is_a_one_line_error(tmp_path):
    missing = tmp_path / "absent.csv"
    result = _evaluate("--model=minilm", "--task=sts", f"--data={missing}")
    _assert_one_line_error(result, str(missing), "no such file")


def test_missing_model_flag_is_a_one_line_error(tmp_path):
    result = _evaluate("--task=sts", f"--data={tmp_path}")
    _assert_one_line_error(result, "--model is required")
