"""Ahead-of-time compilation of the train step (`training.aot`, `launch/compile.py`)."""

import math
import os
import pathlib
import subprocess
import sys

import jax
import pytest

from gecko_jax.config_base import base_config
from gecko_jax.errors import UserError
from gecko_jax.training import aot
from gecko_jax.training import sharding

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_OVERRIDES = (
    "--config.model.num_layers=1",
    "--config.model.hidden_size=32",
    "--config.model.intermediate_size=64",
    "--config.model.num_heads=2",
    "--config.batch_size=8",
    "--config.data.max_length=16",
    "--config.data.query_max_length=8",
    "--config.loss.mrl_dims=(32,16)",
)


def _tiny_config():
    c = base_config()
    # Dropout's random bits triple XLA:CPU's compile time and change no shapes.
    c.model.update(
        vocab_size=128,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
    )
    c.batch_size = 8
    c.data.max_length = 16
    c.data.query_max_length = 8
    return c


def test_compile_report_of_a_sharded_step():
    config = _tiny_config()
    mesh = sharding.create_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices()[:8])
    report = aot.compile_train_step(config, mesh)
    assert report.mesh_shape == {"data": 2, "fsdp": 2, "tensor": 2}
    # AdamW keeps two fp32 moments per parameter; fsdp_tp splits every matrix
    # 2 or 4 ways here, so a device holds well under the replicated 12 bytes each.
    replicated = 12 * report.num_params
    assert replicated / 4 < report.state_bytes < replicated / 1.5
    assert report.argument_bytes >= report.state_bytes
    assert report.temp_bytes > 0
    assert report.peak_bytes >= report.argument_bytes + report.temp_bytes
    # Forward and backward of the tower alone: 6 FLOPs per parameter per token.
    tokens = config.batch_size * (8 + 16 + 16)
    assert report.flops_per_device * 8 > 2 * report.num_params * tokens
    # The model's count sees the same full-length texts as XLA's, which adds
    # the optimizer and the embedding gradients; the step has no loop.
    assert not report.loops
    assert 1 < report.flops_per_device / report.model_flops_per_device < 2
    text = aot.format_report(report)
    assert "peak" in text and "model FLOPs" in text


def test_batch_must_divide_over_the_mesh():
    config = _tiny_config()
    config.batch_size = 6
    mesh = sharding.create_mesh({"data": 4, "fsdp": 2}, jax.devices()[:8])
    with pytest.raises(UserError, match="not divisible by the data-parallel size 8"):
        aot.compile_train_step(config, mesh)


def _compile_cli(*args):
    env = dict(os.environ, XLA_FLAGS="")
    return subprocess.run(
        [sys.executable, str(REPO / "launch" / "compile.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_cli_rejects_a_malformed_mesh():
    result = _compile_cli(f"--config={REPO}/configs/gecko_minilm.py", "--mesh=2,4")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --mesh=2,4 must be three positive sizes data,fsdp,tensor such as 2,4,1"
    )


@pytest.mark.slow
def test_cli_compiles_for_a_simulated_mesh():
    # gecko_minilm names pretrained weights; compiling must not need them.
    result = _compile_cli(f"--config={REPO}/configs/gecko_minilm.py", "--mesh=2,4,1", *TINY_OVERRIDES)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mesh: data=2, fsdp=4, tensor=1 (8 devices)" in result.stdout
    assert "peak" in result.stdout
    flops = result.stdout.split("FLOPs per device and step: ")[1]
    assert math.isfinite(float(flops.split()[0]))
    assert math.isfinite(float(flops.split("XLA's count ")[1].split()[0]))
