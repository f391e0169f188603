"""Tests for gecko_jax.data.tasks: SeqIO tasks and the dual-encoder converter."""

import numpy as np
import pytest
import seqio
import tensorflow as tf

from gecko_jax.data import formats
from gecko_jax.data import packing
from gecko_jax.data import tasks
from gecko_jax.data import vocabularies

EXAMPLES = [
    {
        "query": "Who built the bridge?",
        "positive": "Engineers built it in 1890.",
        "negative": "A ferry ran daily.",
        "task": "question answering",
        "title": "Bridges",
        "negative_title": "Ferries",
    },
    {"query": "No task here", "positive": "Nor a title."},
    {
        "query": "Un café à Zürich ☕",
        "positive": "Ein Kaffee in Zürich.",
        "negative": "Tea in Kyoto.",
        "task": "semantic similarity",
        "title": "unused",
    },
    {
        "query": "forced symmetric",
        "positive": "yes",
        "negative": "no",
        "task": "fact checking",
        "symmetric": True,
    },
    {"query": "forced asymmetric", "positive": "doc", "task": "classification", "symmetric": False},
    {
        "query": " ".join(["long"] * 40),
        "positive": " ".join(["text"] * 13),
        "negative": "x",
        "task": "search result",
        "title": "T",
    },
]


@pytest.fixture(scope="module")
def vocab():
    return vocabularies.get_vocabulary("minilm")


@pytest.mark.parametrize("fmt", formats.FORMATS)
@pytest.mark.parametrize("batch_size", [None, 4])
def test_tf_format_matches_python(fmt, batch_size):
    ds = tf.data.Dataset.from_tensor_slices(tasks.examples_to_columns(EXAMPLES))
    if batch_size:  # The Task formats whole batches; a last, partial one too.
        formatted = ds.batch(batch_size).map(tasks.format_fn(fmt)).unbatch()
    else:
        formatted = ds.map(tasks.format_fn(fmt))
    got = [{k: v.decode("utf-8") for k, v in ex.items()} for ex in formatted.as_numpy_iterator()]
    assert got == [formats.format_example(ex, fmt) for ex in EXAMPLES]


def test_task_output_equals_packing(vocab):
    # One format suffices: the format test above covers the other's texts.
    fmt = "gecko"
    max_length = 12  # Short enough that some texts are truncated.
    task = tasks.register_task(tasks.task_name(f"test.equals_packing.{fmt}"), lambda: EXAMPLES, vocab, fmt)
    converter = tasks.DualEncoderFeatureConverter(vocab.bos_id, vocab.eos_id, vocab.pad_id)
    out = tasks.materialize(task, converter, {k: max_length for k in tasks.TEXT_FEATURES})

    texts = [formats.format_example(ex, fmt) for ex in EXAMPLES]
    for key in ("query", "positive", "negative"):
        ids, mask = packing.pack(
            [vocab.encode(t[key]) for t in texts], max_length, vocab.bos_id, vocab.eos_id, vocab.pad_id
        )
        if key == "negative":
            has = np.array([bool(t["negative"]) for t in texts])
            ids[~has], mask[~has] = vocab.pad_id, 0
        np.testing.assert_array_equal(out[f"{key}_ids"], ids)
        np.testing.assert_array_equal(out[f"{key}_mask"], mask)
    np.testing.assert_array_equal(out["has_negative"], [1, 0, 1, 1, 0, 1])
    assert all(v.dtype == np.int32 for v in out.values())
    assert out["query_mask"][-1].all()  # The 40-word query fills the row.


def test_task_is_registered_and_replaceable(vocab):
    name = tasks.task_name("test/registry name")
    assert name == "gecko_jax.test_registry_name"
    tasks.register_task(name, lambda: EXAMPLES[:2], vocab, "plain")
    task = tasks.register_task(name, lambda: EXAMPLES[:3], vocab, "plain")
    assert seqio.get_mixture_or_task(name) is task
    raw = list(task.source.get_dataset(split="train", shuffle=False).as_numpy_iterator())
    assert [ex["query"].decode("utf-8") for ex in raw] == [ex["query"] for ex in EXAMPLES[:3]]


def test_converter_per_feature_lengths_and_specials():
    ds = tf.data.Dataset.from_generator(
        lambda: iter([{"query": [5, 6, 7], "positive": list(range(10, 30)), "negative": []}]),
        output_signature={k: tf.TensorSpec([None], tf.int32) for k in ("query", "positive", "negative")},
    )
    converter = tasks.DualEncoderFeatureConverter(bos_id=1, eos_id=2, pad_id=0)
    out = next(converter(ds, {"query": 6, "positive": 5, "negative": 4}).as_numpy_iterator())
    np.testing.assert_array_equal(out["query_ids"], [1, 5, 6, 7, 2, 0])
    np.testing.assert_array_equal(out["query_mask"], [1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(out["positive_ids"], [1, 10, 11, 12, 2])
    np.testing.assert_array_equal(out["negative_ids"], [0, 0, 0, 0])
    np.testing.assert_array_equal(out["negative_mask"], [0, 0, 0, 0])
    assert out["has_negative"] == 0
    with pytest.raises(ValueError, match="at least 2"):
        converter(ds, {"query": 1, "positive": 5, "negative": 4})


def test_batched_tf_tokens_match_python_with_a_repeated_vocab_token(tmp_path):
    # A repeated token leaves its earlier id unused; the TF tokenizer must
    # still give the later id, as the Python path (and HF) do.
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b", "a", "##b", ""]) + "\n")
    vocab = vocabularies.get_vocabulary(f"wordpiece:{path}")
    texts = ["ab a b", "b [SEP] a", "zzz", ""]
    got = vocab.encode_tf(tf.constant(texts)).to_list()
    assert got == [list(vocab.encode(t)) for t in texts]
    assert got[0] == [6, 7, 6, 5]
