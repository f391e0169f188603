"""The jasper_distill and xtr recipes: argument parsing, and their runlocal variants training."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from flax import traverse_util

from gecko_jax import checkpoint_io

from recipe_configs import get_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def _train(workdir, config, *overrides):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "launch" / "train.py"),
            f"--config={REPO}/configs/{config}",
            f"--workdir={workdir}",
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_jasper_stages_train_the_parameter_groups_of_the_method():
    stage1, stage2, stage3 = (get_config("jasper_distill", f"stage{n}") for n in (1, 2, 3))
    assert stage1.optimizer.trainable == ("projection/",) and stage1.model.init == "minilm"
    assert stage2.optimizer.trainable == ("projection/", "backbone/layer_(3|4|5)/")
    assert stage2.model.init == "runs/jasper_stage1"
    assert stage3.optimizer.trainable == () and stage3.loss.mrl_dims == (1024, 512, 256)
    assert [c.optimizer.learning_rate for c in (stage1, stage2, stage3)] == [1e-4, 8e-5, 7e-5]
    assert (
        get_config("jasper_distill", "runlocal").to_dict()
        == get_config("jasper_distill", "stage1_runlocal").to_dict()
    )
    with pytest.raises(ValueError, match="unknown config argument"):
        get_config("jasper_distill", "stage4")


@pytest.mark.slow
def test_xtr_runlocal_trains_and_skips_single_vector_evals(tmp_path):
    out = _train(
        tmp_path / "xtr",
        "xtr.py:runlocal",
        "--config.evals={'sts': {'task': 'sts', 'data': 'stsb/sts-dev.csv'}}",
    )
    assert "step 3/3" in out and "eval: skipping sts" in out


@pytest.mark.slow
def test_jasper_stage2_starts_from_stage1_and_freezes_the_first_layer(tmp_path):
    _train(tmp_path / "s1", "jasper_distill.py:runlocal")
    _train(tmp_path / "s2", "jasper_distill.py:stage2_runlocal", f"--config.model.init={tmp_path / 's1'}")
    _, first = checkpoint_io.restore_params(str(tmp_path / "s1"))
    _, second = checkpoint_io.restore_params(str(tmp_path / "s2"))
    first, second = traverse_util.flatten_dict(first, sep="/"), traverse_util.flatten_dict(second, sep="/")
    for name, value in first.items():
        trained = name.startswith(
            ("projection/", "backbone/layer_1/", "backbone/layer_2/", "backbone/layer_3/")
        )
        assert np.array_equal(value, second[name]) != trained, name
