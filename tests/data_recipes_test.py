"""The data side of the recipes: Gemini Embedding's stages and `python -m gecko_jax.data.inspect`."""

import os
import re
import subprocess
import sys

import pytest

from gecko_jax.data import mixtures
from recipe_configs import CONFIGS
from recipe_configs import get_config


def test_gemini_prefinetune_is_a_large_pooled_batch_without_hard_negatives():
    c = get_config("gemini_embedding", "prefinetune")
    assert c.batch_size == 4096
    assert not c.data.one_source_batches
    assert not c.data.squad_hard_negatives
    assert not mixtures.has_rates(c.data.mixture)
    assert {name for name, _ in mixtures.parse_mixture(c.data.mixture)} == {
        "squad",
        "stackoverflow",
        "stsb",
        "sick",
    }
    assert tuple(c.loss.mrl_dims) == (768, 1536, 3072)
    assert c.loss.name == "gemini_nce" and not c.loss.same_tower


@pytest.mark.parametrize("arg", ["", "finetune"])
def test_gemini_finetune_draws_one_source_per_batch_of_triples(arg):
    c = get_config("gemini_embedding", arg)
    assert c.batch_size == 512
    assert c.data.one_source_batches and c.data.squad_hard_negatives
    names = [name for name, _ in mixtures.parse_mixture(c.data.mixture)]
    assert "squad" in names and "snli" in names and mixtures.has_rates(c.data.mixture)
    assert tuple(c.loss.mrl_dims) == (768, 1536, 3072)


def test_gemini_runlocal_is_the_finetune_stage_shrunk_to_the_tiny_set():
    c = get_config("gemini_embedding", "runlocal")
    assert (c.total_steps, c.batch_size) == (3, 8)
    assert c.data.one_source_batches
    assert mixtures.parse_mixture(c.data.mixture) == [("tiny", None)]
    assert c.model.vocab == "minilm" and c.model.vocab_size == 30522
    assert tuple(c.loss.mrl_dims)[-1] == c.model.projection_dim
    with pytest.raises(ValueError, match=":prefinetune, :finetune or :runlocal"):
        get_config("gemini_embedding", "pretrain")


def test_inspect_prints_examples_as_the_model_sees_them(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gecko_jax.data.inspect",
            f"--config={CONFIGS / 'gemini_embedding.py'}:runlocal",
            "--num_examples=2",
            "--speed_batches=2",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert sum(line.startswith("[batch 0 row ") for line in lines) == 2
    queries = [line for line in lines if line.strip().startswith("query:")]
    # Gecko's format `task: T | query: Q`, decoded from MiniLM's uncased word pieces.
    pattern = re.compile(r"  query: +task: [a-z ]+ \| query: \S.*")
    assert len(queries) == 2 and all(pattern.fullmatch(q) for q in queries), queries
    assert "examples/s" in lines[-1]
