"""AligneR training: GradCache equals the plain step on one device and eight; the recipe runs.

The salience gate works text by text, so embedding a chunk of texts gives the
rows the whole batch gives; these tests hold the gradients of the tower, the
salience heads included, to that.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from gecko_jax.training import sharding
from gecko_jax.training.grad_cache import grad_cache_value_and_grad
from grad_cache_helpers import plain_value_and_grad, setup  # pylint: disable=g-bad-import-order
from recipe_configs import get_config  # pylint: disable=g-bad-import-order
from workdir_helpers import random_params, tiny_bert_config  # pylint: disable=g-bad-import-order

REPO = pathlib.Path(__file__).resolve().parents[1]


def _setup():
    # The gate's gradients magnify float32 rounding of its inputs: a 1e-7
    # relative nudge of the parameters moved them by 0.1% of their scale at
    # eps = 0.05 and by 2e-5 at eps = 0.5 (measured on this setup), so eps =
    # 0.5 keeps the two paths' different summation orders to rounding.
    config = tiny_bert_config(
        vocab_size=97,
        multi_vector_dim=8,
        salience_heads=True,
        salience_epsilon=0.5,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
    )
    config.model.num_layers = 1  # Compiles in half the time; the heads are what is tested.
    config.loss.update(name="aligner", aligner_alignment="topk:2", temperature=0.1, mrl_dims=(8, 4))
    model, _, batch, loss_fn = setup(config, {"query": 5, "positive": 9, "negative": 9})
    # Random salience heads: the uniform start would leave the gate's own
    # gradient path untested. A bias of 1 keeps most tokens above the ReLU.
    params = random_params(config, seed=2)
    for head in params["saliences"].values():
        head["bias"] = np.ones_like(head["bias"])
    return model, params, batch, loss_fn


def _assert_same(a, b):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    np.testing.assert_allclose(float(loss_a), float(loss_b), rtol=1e-5)
    # That rounding follows the scale of the gradients, not of each entry (a
    # small entry is a sum that cancels): the tolerance adds 1e-5 of the
    # largest entry, at least twice the differences seen.
    scale = max(float(np.abs(y).max()) for y in jax.tree.leaves(grads_b))
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5 * scale), grads_a, grads_b
    )
    for head in grads_b["saliences"].values():
        assert np.abs(head["kernel"]).max() > 0


def test_grad_cache_equals_plain_step():
    model, params, batch, loss_fn = _setup()
    plain = jax.jit(lambda p, b: plain_value_and_grad(model, p, b, loss_fn))(params, batch)
    cached = jax.jit(lambda p, b: grad_cache_value_and_grad(model, p, b, loss_fn, 4))(params, batch)
    _assert_same(cached, plain)


def test_grad_cache_on_eight_devices_equals_one():
    model, params, batch, loss_fn = _setup()
    mesh = sharding.create_mesh({"data": -1}, jax.devices())
    step = jax.jit(lambda p, b: grad_cache_value_and_grad(model, p, b, loss_fn, 8))
    with sharding.activated(mesh, sharding.LOGICAL_AXIS_RULES):
        sharded = step(params, jax.device_put(batch, sharding.batch_sharding(mesh)))
    plain = jax.jit(lambda p, b: plain_value_and_grad(model, p, b, loss_fn))(params, batch)
    _assert_same(sharded, plain)


def test_recipe_follows_the_paper():
    config = get_config("aligner")
    assert (config.loss.name, config.loss.aligner_alignment) == ("aligner", "top1")
    assert config.model.salience_heads and config.model.multi_vector_dim == 128
    assert (
        config.model.salience_query_fraction,
        config.model.salience_doc_fraction,
        config.model.salience_epsilon,
    ) == (0.5, 0.4, 0.002)
    assert get_config("aligner", "runlocal").total_steps == 3
    with pytest.raises(ValueError, match="unknown config argument"):
        get_config("aligner", "large")


def _write_beir_folder(folder):
    """Three queries over five documents, each query a copy of its document."""
    texts = {
        "d1": "Paris is the capital and largest city of France.",
        "d2": "Salmon are fish that swim upstream to spawn.",
        "d3": "Python is a programming language.",
        "d4": "The moon orbits the earth every month.",
        "d5": "Tea is grown on the hills of Darjeeling.",
    }
    queries = {"q1": texts["d1"], "q2": texts["d3"], "q3": texts["d4"]}
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "text": x}) + "\n" for i, x in texts.items())
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": i, "text": x}) + "\n" for i, x in queries.items())
    )
    (folder / "qrels" / "test.tsv").write_text("q1\td1\t1\nq2\td3\t1\nq3\td4\t1\n")


def _run(script, *args):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, str(REPO / "launch" / script), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_runlocal_trains_and_its_workdir_evaluates_with_pruning_and_adaptation(tmp_path):
    workdir = tmp_path / "aligner"
    out = _run("train.py", f"--config={REPO}/configs/aligner.py:runlocal", f"--workdir={workdir}")
    assert "step 3/3" in out
    _write_beir_folder(tmp_path / "beir")
    metrics = json.loads(
        _run(
            "evaluate.py",
            f"--model={workdir}",
            "--task=retrieval",
            f"--data={tmp_path / 'beir'}",
            "--prune_doc=0.4",
            "--prune_query=0.5",
            "--adapt_alignment=1",
            "--token_k=8",
        )
    )
    assert metrics["num_queries"] == 2 and metrics["adaptation_queries"] == 1
    grid = {
        key.removeprefix("adaptation.").removesuffix(".ndcg@10")
        for key in metrics
        if key.startswith("adaptation.")
    }
    assert len(grid) == 9 and metrics["alignment"] in grid
    assert metrics["num_index_tokens"] < 0.5 * metrics["num_doc_tokens"]
    assert 0 <= metrics["ndcg@10"] <= 1
