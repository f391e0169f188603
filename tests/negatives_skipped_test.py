"""Batches without hard negatives skip the negatives' forward pass and train as before.

The input pipeline leaves out `negative_ids`/`negative_mask` when no row of
the global batch has a negative (pre-finetuning pairs); the train step then
embeds only queries and positives. The step must equal the one that embeds
all-padding negatives and masks them with `has_negative` = 0.
"""

import json

import jax
import numpy as np
import optax
import pytest

from gecko_jax.config_base import base_config
from gecko_jax.data import pipeline
from gecko_jax.data import vocabularies
from gecko_jax.training.train_step import TrainState, make_train_step
from grad_cache_helpers import setup  # pylint: disable=g-bad-import-order
from workdir_helpers import tiny_bert_config  # pylint: disable=g-bad-import-order


@pytest.mark.parametrize("loss, chunk_size", [("gecko", 0), ("gemini_nce", 0), ("gecko", 4)])
def test_a_step_without_negative_arrays_equals_masked_negatives(loss, chunk_size):
    config = tiny_bert_config(vocab_size=97, dropout_rate=0.0, attention_dropout_rate=0.0)
    config.loss.name = loss
    model, params, batch, loss_fn = setup(config, {"query": 6, "positive": 10, "negative": 10})
    masked = dict(batch, has_negative=np.zeros_like(batch["has_negative"]))
    without = {k: v for k, v in masked.items() if not k.startswith("negative_")}
    tx = optax.sgd(0.1)
    step = jax.jit(make_train_step(model, tx, loss_fn, optax.constant_schedule(0.1), chunk_size))
    state = TrainState(step=0, params=params, opt_state=tx.init(params))
    (after_masked, metrics_masked), (after_without, metrics_without) = (
        step(state, b, jax.random.key(0)) for b in (masked, without)
    )
    np.testing.assert_allclose(metrics_without["loss"], metrics_masked["loss"], rtol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        after_without.params,
        after_masked.params,
    )
    assert int(metrics_without["tokens"]) == int(batch["query_mask"].sum() + batch["positive_mask"].sum())


def test_pipeline_leaves_out_negatives_only_for_batches_without_any(tmp_path):
    pairs = [{"query": f"q {i}", "positive": f"p {i}"} for i in range(48)]
    triplets = [{"query": f"t {i}", "positive": f"p {i}", "negative": f"n {i}"} for i in range(8)]
    for name, rows in (("pairs", pairs), ("triplets", triplets)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = base_config().data
    config.update(
        {"train_files": f"{tmp_path}/pairs.jsonl", "max_length": 16, "cache_dir": str(tmp_path / "c")}
    )
    vocabulary = vocabularies.get_vocabulary("minilm")
    batch = pipeline.TrainData(config, vocabulary, 4, 0).batch(0)
    assert "negative_ids" not in batch and "negative_mask" not in batch and not batch["has_negative"].any()
    config.train_files = f"{tmp_path}/pairs.jsonl,{tmp_path}/triplets.jsonl"
    mixed = pipeline.TrainData(config, vocabulary, 4, 0)
    batches = [mixed.batch(k) for k in range(24)]
    assert {"negative_ids" in b for b in batches} == {True, False}  # Both kinds occur in 24 batches of 4.
    for b in batches:
        assert ("negative_ids" in b) == bool(b["has_negative"].any())
