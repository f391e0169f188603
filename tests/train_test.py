"""End-to-end runs of `launch/train.py` on the tiny `gecko_768:runlocal` recipe."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gecko_jax import Encoder
from gecko_jax import checkpoint_io
from gecko_jax.data.pipeline import TrainData
from gecko_jax.data.vocabularies import get_vocabulary
from gecko_jax.training import trainer
from recipe_configs import get_config

REPO = pathlib.Path(__file__).resolve().parents[1]
RUNLOCAL = f"--config={REPO}/configs/gecko_768.py:runlocal"
# Embedded to compare runs: equal parameters give equal embeddings.
PROBE_TEXTS = ["how do tides work?", "The moon pulls the oceans.", "A man is playing a guitar on stage.", "x"]


def _train_cmd(workdir, *overrides):
    return [sys.executable, str(REPO / "launch" / "train.py"), RUNLOCAL, f"--workdir={workdir}", *overrides]


def _env():
    env = dict(os.environ)
    env["XLA_FLAGS"] = ""  # One CPU device, as a user's laptop run has.
    return env


def _train(workdir, *overrides, check=True):
    return subprocess.run(
        _train_cmd(workdir, *overrides), env=_env(), capture_output=True, text=True, check=check, timeout=600
    )


def _final_params(workdir):
    _, params = checkpoint_io.restore_params(str(workdir))
    return params


def _max_abs_diff(a, b):
    import jax  # pylint: disable=g-import-not-at-top

    diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)
    return max(jax.tree.leaves(diffs))


def _probe_embeddings(workdir):
    return Encoder.load(str(workdir)).encode(PROBE_TEXTS)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """Four plain steps of runlocal on one device: (workdir, completed process).

    The first step has learning rate 0 (warmup), so four give three updates:
    enough for a wrong gradient to move the embeddings far beyond 1e-4.
    """
    workdir = tmp_path_factory.mktemp("plain")
    return workdir, _train(workdir, "--config.total_steps=4")


def test_two_steps_of_runlocal(plain_run):
    workdir, result = plain_run
    assert "step 4/4" in result.stdout, result.stdout + result.stderr
    assert (workdir / "checkpoints" / "4").is_dir()
    assert json.loads((workdir / "config.json").read_text())["total_steps"] == 4
    assert list((workdir / "tensorboard").iterdir()), "no TensorBoard event file"


def test_runlocal_with_grad_cache_equals_plain(tmp_path, plain_run):
    result = _train(tmp_path, "--config.total_steps=4", "--config.grad_cache.chunk_size=2")
    assert "step 4/4" in result.stdout, result.stdout + result.stderr
    np.testing.assert_allclose(_probe_embeddings(tmp_path), _probe_embeddings(plain_run[0]), atol=1e-4)


def _train_in_process(workdir, steps=4, **data_fields):
    """`steps` steps of runlocal in this process (conftest simulates 8 devices)."""
    config = get_config("gecko_768", "runlocal")
    config.total_steps = steps
    config.data.update(data_fields)
    sigterm_handler = signal.getsignal(signal.SIGTERM)
    try:
        trainer.train_and_evaluate(config, str(workdir))
    finally:
        signal.signal(signal.SIGTERM, sigterm_handler)
    return config


def test_runlocal_on_eight_devices_equals_one(tmp_path, plain_run):
    # Runlocal's mesh is data=-1: the batch of 8 is split one example per device.
    _train_in_process(tmp_path)
    np.testing.assert_allclose(_probe_embeddings(tmp_path), _probe_embeddings(plain_run[0]), atol=1e-4)


def test_runlocal_with_length_buckets_equals_fixed_padding(tmp_path):
    # Limits above runlocal's 24/32 tokens, so that its texts are not cut and
    # the bucketed batches are shorter than the limits; 8 steps, so that the
    # run meets more than one bucket.
    lengths = {"max_length": 96, "query_max_length": 64}
    config = _train_in_process(tmp_path / "bucketed", steps=8, bucket_lengths=True, **lengths)
    _train_in_process(tmp_path / "fixed", steps=8, **lengths)
    data = TrainData(config.data, get_vocabulary(config.model.vocab), config.batch_size, config.seed)
    padded = [data.padded_lengths(k) for k in range(8)]
    assert all(p["query"] < 64 and p["positive"] < 96 for p in padded), padded
    assert len({tuple(p.values()) for p in padded}) > 1, padded
    np.testing.assert_allclose(
        _probe_embeddings(tmp_path / "bucketed"), _probe_embeddings(tmp_path / "fixed"), atol=1e-4
    )
    logged = [json.loads(line) for line in (tmp_path / "bucketed" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged if "train.mfu" in m] == list(range(1, 9))


def test_unknown_field_is_one_line_error(tmp_path):
    result = _train(tmp_path, "--config.model.hiden_size=3", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "hidden_size" in result.stderr


def test_missing_config_file_is_one_line_error(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "launch" / "train.py"),
            "--config=configs/no_such.py:runlocal",
            f"--workdir={tmp_path / 'run'}",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --config=configs/no_such.py: no such file; pass a recipe such as "
        "configs/gecko_minilm.py, optionally with :ARG"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_resuming_with_another_model_is_refused_and_the_workdir_kept(tmp_path, plain_run):
    workdir = tmp_path / "copy"
    shutil.copytree(plain_run[0], workdir)
    config_before = (workdir / "config.json").read_text()
    result = _train(workdir, "--config.total_steps=6", "--config.model.projection_dim=16", check=False)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: checkpoint step 4 in ") and "does not fit the config" in last
    assert "resume with the workdir's config.json" in last
    assert "Traceback" not in result.stderr
    assert (workdir / "config.json").read_text() == config_before
    np.testing.assert_array_equal(_probe_embeddings(workdir), _probe_embeddings(plain_run[0]))


def test_malformed_jsonl_is_one_line_error(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"query": "a", "positive": "b"}\n{"query": "a"\n')
    result = _train(tmp_path / "run", f"--config.data.train_files={data}", check=False)
    assert result.returncode != 0
    assert f"{data}:2:" in result.stderr
    assert "Traceback" not in result.stderr


# Twelve steps, so that a run killed at its step-3 checkpoint is far from done.
INTERRUPTED_STEPS = "--config.total_steps=12"


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """The uninterrupted twelve-step run both interruption tests compare with.

    Checkpointing (the tests' `checkpoint_every`) does not change the
    parameters, so one run serves both.
    """
    workdir = tmp_path_factory.mktemp("straight")
    _train(workdir, INTERRUPTED_STEPS)
    return workdir


@pytest.mark.slow
def test_kill9_and_resume_equals_uninterrupted(tmp_path, straight_run):
    steps = (INTERRUPTED_STEPS, "--config.checkpoint_every=1")

    workdir = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(workdir, *steps), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not (workdir / "checkpoints" / "3").is_dir():
        assert proc.poll() is None, "the run ended before its step-3 checkpoint"
        assert time.time() < deadline, "no step-3 checkpoint after 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (workdir / "checkpoints" / "12").exists(), "killed too late to test resuming"

    resumed = _train(workdir, *steps)
    assert "Resuming from checkpoint step" in resumed.stdout
    assert _max_abs_diff(_final_params(workdir), _final_params(straight_run)) <= 1e-5


@pytest.mark.slow
def test_sigterm_saves_and_resume_equals_uninterrupted(tmp_path, straight_run):
    steps = (INTERRUPTED_STEPS, "--config.checkpoint_every=0")

    workdir = tmp_path / "stopped"
    proc = subprocess.Popen(
        _train_cmd(workdir, *steps, "--config.log_every=1"),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    for line in proc.stdout:
        if line.startswith("step 2/"):
            proc.send_signal(signal.SIGTERM)
            break
    out = proc.stdout.read()
    assert proc.wait(timeout=300) == 143  # Preempted, not finished.
    assert "Stopped at step" in out
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and saved[-1] < 12

    _train(workdir, *steps)
    assert _max_abs_diff(_final_params(workdir), _final_params(straight_run)) <= 1e-5
