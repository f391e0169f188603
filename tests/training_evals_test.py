"""In-training evaluation: config.evals, metrics.jsonl and the best checkpoint."""

import json
import signal

import pytest

from gecko_jax import Encoder
from gecko_jax.config_base import evaluator
from gecko_jax.errors import UserError
from gecko_jax.evaluation import bundled_data, tasks
from gecko_jax.evaluation.prompts import default_prompts
from gecko_jax.training import trainer
from gecko_jax.training.evaluators import Evaluators
from recipe_configs import get_config


def _config(data_dir):
    config = get_config("gecko_768", "runlocal")
    config.total_steps = 3
    config.checkpoint_every = 0
    config.data.data_dir = str(data_dir)
    config.evals.sick = evaluator("sts", "sick.txt", every=2, dims=(16,))
    config.evals.banking = evaluator("classification", "banking77")
    config.best_metric = "evals.sick.spearman"
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data):
    """A 3-step runlocal training with two evaluators: (workdir, config, results)."""
    data_dir = tmp_path_factory.mktemp("data")
    lines = (
        (shared_data / "sick" / "SICK_test_annotated.txt")
        .read_text(encoding="utf-8")
        .splitlines(keepends=True)
    )
    (data_dir / "sick.txt").write_text("".join(lines[:41]), encoding="utf-8")
    bundled_data.split_train_test(
        str(shared_data / "banking77" / "train.csv"), str(data_dir / "banking77"), max_rows=120
    )
    workdir = tmp_path_factory.mktemp("workdir")
    config = _config(data_dir)
    sigterm_handler = signal.getsignal(signal.SIGTERM)
    try:
        results = trainer.train_and_evaluate(config, str(workdir))
    finally:
        signal.signal(signal.SIGTERM, sigterm_handler)
    return workdir, config, results


def _lines(workdir, prefix):
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if any(key.startswith(prefix) for key in line)]


@pytest.mark.slow
def test_each_evaluator_runs_on_its_own_schedule(run):
    workdir, _, results = run
    evals = _lines(workdir, "evals.")
    sick_steps = [line["step"] for line in evals if "evals.sick.spearman" in line]
    banking_steps = [line["step"] for line in evals if "evals.banking.accuracy" in line]
    assert sick_steps == [0, 2, 3]
    assert banking_steps == [0, 3]
    assert set(results) == {"sick.spearman", "sick.spearman@16", "banking.accuracy", "banking.f1"}
    assert [line["step"] for line in _lines(workdir, "train.loss")] == [1, 2, 3]
    assert list((workdir / "tensorboard").iterdir())


@pytest.mark.slow
def test_final_numbers_equal_a_fresh_evaluation_of_the_checkpoint(run):
    workdir, config, results = run
    encoder = Encoder.load(str(workdir))
    assert encoder.input_format == "gecko"
    sick = tasks.load_task_data("sts", f"{config.data.data_dir}/sick.txt")
    fresh = tasks.score_task(encoder, "sts", sick, default_prompts("gecko", "sts"))
    assert results["sick.spearman"] == pytest.approx(fresh["spearman"], abs=1e-4)


@pytest.mark.slow
def test_best_checkpoint_holds_the_best_evaluation(run):
    workdir, config, _ = run
    best = json.loads((workdir / "best" / "best.json").read_text())
    values = {line["step"]: line["evals.sick.spearman"] for line in _lines(workdir, "evals.sick.spearman")}
    assert best["metric"] == "evals.sick.spearman"
    assert best["value"] == max(values.values())
    assert best["step"] == max(values, key=lambda step: (values[step], -step))
    sick = tasks.load_task_data("sts", f"{config.data.data_dir}/sick.txt")
    reloaded = tasks.score_task(
        Encoder.load(str(workdir / "best")), "sts", sick, default_prompts("gecko", "sts")
    )
    assert reloaded["spearman"] == pytest.approx(best["value"], abs=1e-4)


def test_unknown_best_metric_lists_the_choices(tmp_path, shared_data):
    (tmp_path / "sick.txt").write_text(
        (shared_data / "sick" / "SICK_trial.txt").read_text(encoding="utf-8"), encoding="utf-8"
    )
    config = _config(tmp_path)
    del config.evals["banking"]
    config.best_metric = "evals.sick.pearson"
    with pytest.raises(UserError, match=r"evals\.sick\.spearman@16"):
        Evaluators(config, None, None, str(tmp_path))
