"""Config values out of range are refused in one line before a run does any work."""

import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from gecko_jax.config_base import base_config, evaluator
from gecko_jax.errors import UserError
from gecko_jax.training import config_checks
from gecko_jax.training import trainer
from recipe_configs import get_config

REPO = pathlib.Path(__file__).resolve().parents[1]
RECIPES = [
    ("gecko_270m", ""),
    ("gecko_768", ""),
    ("gecko_768", "runlocal"),
    ("gecko_minilm", ""),
    ("gemini_embedding", "prefinetune"),
    ("gemini_embedding", "runlocal"),
    ("jasper_distill", "stage1"),
    ("jasper_distill", "stage3_runlocal"),
    ("xtr", ""),
    ("xtr", "runlocal"),
]


@pytest.mark.parametrize("name,arg", RECIPES)
def test_every_recipe_is_in_range(name, arg):
    config_checks.check_config(get_config(name, arg))


@pytest.mark.parametrize(
    "field,value",
    [
        ("log_every", 0),
        ("keep_checkpoints", 0),
        ("checkpoint_every", -1),
        ("eval_every", -1),
        ("batch_size", 0),
        ("total_steps", 0),
        ("seed", -1),
        ("optimizer.learning_rate", 0.0),
        ("optimizer.learning_rate", float("nan")),
        ("optimizer.learning_rate", float("inf")),
        ("optimizer.b2", 1.0),
        ("optimizer.end_lr_fraction", 1.5),
        ("model.dropout_rate", 1.0),
        ("loss.temperature", -0.05),
        ("loss.mrl_dims", (64, 0)),
        ("eval_batch_size", 0),
        ("optimizer.decay", "cosine_restarts"),
        ("best_mode", "maximum"),
    ],
)
def test_a_value_out_of_range_names_its_flag(field, value):
    config = base_config()
    *sections, leaf = field.split(".")
    section = config
    for name in sections:
        section = section[name]
    section[leaf] = value
    with pytest.raises(UserError) as refused:
        config_checks.check_config(config)
    assert str(refused.value).startswith(f"--config.{field}={value!r} is out of range; ")
    assert "\n" not in str(refused.value)


def test_an_evaluator_entry_is_checked_too():
    config = base_config()
    config.evals.sick = evaluator("sts", "sick.txt", every=-2)
    with pytest.raises(UserError, match=r"^--config.evals.sick.every=-2 is out of range"):
        config_checks.check_config(config)


def test_eval_batch_size_must_split_over_devices_only_when_evaluating():
    mesh = Mesh(np.asarray(jax.devices()[:8]).reshape(8, 1, 1), ("data", "fsdp", "tensor"))
    config = base_config()
    config.eval_batch_size = 12
    config_checks.check_for_mesh(config, mesh)
    config.evals.sick = evaluator("sts", "sick.txt")
    with pytest.raises(UserError, match=r"^--config.eval_batch_size=12 is not divisible"):
        config_checks.check_for_mesh(config, mesh)


def test_keep_checkpoints_zero_is_refused_before_the_workdir_is_made(tmp_path):
    config = get_config("gecko_768", "runlocal")
    config.keep_checkpoints = 0
    with pytest.raises(UserError, match=r"^--config.keep_checkpoints=0 is out of range"):
        trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_config_arg_the_recipe_refuses_is_one_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "launch" / "train.py"),
            f"--config={REPO}/configs/gecko_768.py:bogus",
            f"--workdir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: --config={REPO}/configs/gecko_768.py:bogus: unknown config argument 'bogus'; "
        "use configs/gecko_768.py or :runlocal"
    )
    assert not (tmp_path / "run").exists()
