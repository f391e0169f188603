"""One evaluation spec: a config's evaluators and launch/evaluate.py's suites build the same one."""

import dataclasses
import json
import pathlib
import subprocess
import sys

import pytest

from gecko_jax.config_base import base_config, evaluator
from gecko_jax.errors import UserError
from gecko_jax.evaluation.eval_spec import EvalSpec, read_suite
from gecko_jax.evaluation.prompts import default_prompts
from gecko_jax.training.evaluators import config_specs, metric_names

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_a_config_entry_and_a_suite_entry_make_the_same_spec(tmp_path):
    config = base_config()
    config.evals.stsb = evaluator("sts", "stsb/sts-dev.csv", dims=(128,), prompt="p: ")
    suite = tmp_path / "suite.json"
    suite.write_text(
        json.dumps([{"name": "stsb", "task": "sts", "data": "stsb/sts-dev.csv", "prompt": "p: "}])
    )
    (from_config,), (from_suite,) = config_specs(config), read_suite(str(suite))
    assert from_config == EvalSpec("stsb", "sts", "stsb/sts-dev.csv", dims=(128,), prompt="p: ")
    assert from_suite == EvalSpec("stsb", "sts", "stsb/sts-dev.csv", prompt="p: ")
    assert from_config.widths == (None, 128) and from_suite.widths == (None,)
    assert metric_names(from_config) == ["stsb.spearman", "stsb.spearman@128"]


def test_a_suite_dim_scores_that_prefix_instead_of_the_full_width(tmp_path):
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps([{"task": "sts", "data": "a/sick.txt", "dim": 64}]))
    (spec,) = read_suite(str(suite))
    assert (spec.name, spec.widths) == ("sts:sick.txt", (64,))


def test_empty_config_fields_keep_the_defaults_and_none_keeps_the_model_prompts():
    config = base_config()
    config.evals.squad = evaluator("retrieval", "squad/dev-a.json", doc_format="{text}")
    (spec,) = config_specs(config)
    assert (spec.split, spec.prompt, spec.doc_prompt) == (None, None, None)
    assert spec.prompts("gecko") == dataclasses.replace(
        default_prompts("gecko", "retrieval"), doc_format="{text}"
    )
    assert EvalSpec("s", "sts", "d", prompt="").prompts("gecko").query == ""


def test_an_entry_given_as_a_dict_takes_the_evaluator_defaults():
    config = base_config()
    config.evals = {"sts": {"task": "sts", "data": "sick.txt"}}  # As --config.evals="{...}" sets it.
    assert config_specs(config) == [EvalSpec("sts", "sts", "sick.txt")]
    config.evals = {"sts": {"task": "sts", "file": "sick.txt"}}
    with pytest.raises(UserError, match=r"^--config.evals.sts: .*'file'"):
        config_specs(config)


def test_the_removed_eval_section_points_to_evals(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "launch" / "train.py"),
            f"--config={REPO}/configs/gecko_768.py:runlocal",
            f"--workdir={tmp_path / 'run'}",
            "--config.eval.sts_file=stsb/sts-dev.csv",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2
    (line,) = [text for text in result.stderr.splitlines() if text.startswith("error: ")]
    assert '"evals"' in line and "--config.eval.sts_file" in line
