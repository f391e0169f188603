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
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, str(REPO / "launch" / "evaluate.py"), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        check=False)


def _assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for fragment in fragments:
        assert fragment in last


def test_sts_with_minilm_prints_one_json_object(shared_data, tmp_path):
    data = shared_data / "stsb" / "sts-dev.csv"
    output = tmp_path / "result.json"
    result = _evaluate("--model=minilm", "--task=sts", f"--data={data}",
                       f"--output={output}")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)  # Fails unless stdout is one object.
    assert metrics["model"] == "minilm"
    assert metrics["task"] == "sts"
    assert metrics["data"] == str(data)
    assert metrics["split"] is None and metrics["dim"] is None
    assert metrics["num_pairs"] == 1500
    # all-MiniLM-L6-v2 scores about 0.87 on STS-B dev (0.82 published on test).
    assert 0.8 < metrics["spearman"] < 0.95
    assert metrics["cosine_spearman"] == metrics["spearman"]
    assert 0.8 < metrics["pearson"] < 0.95
    assert json.loads(output.read_text()) == metrics


@pytest.mark.parametrize("task", ["classification", "clustering", "bogus"])
def test_unsupported_task_is_a_one_line_error(task, tmp_path):
    result = _evaluate("--model=minilm", f"--task={task}", f"--data={tmp_path}")
    _assert_one_line_error(result, f"--task={task}", "tasks: sts, retrieval")


def test_missing_data_is_a_one_line_error(tmp_path):
    missing = tmp_path / "absent.csv"
    result = _evaluate("--model=minilm", "--task=sts", f"--data={missing}")
    _assert_one_line_error(result, str(missing), "no such file")


def test_missing_model_flag_is_a_one_line_error(tmp_path):
    result = _evaluate("--task=sts", f"--data={tmp_path}")
    _assert_one_line_error(result, "--model is required")
