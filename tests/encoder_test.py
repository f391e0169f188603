"""Tests for gecko_jax.encoder, including parity with sentence-transformers."""

import csv
import json

import ml_collections
import numpy as np
import pytest

from gecko_jax import Encoder
from gecko_jax import checkpoint_io
from gecko_jax.errors import UserError
from gecko_jax.models import bert_import
from gecko_jax.pretrained_packages import minilm_folder


def _stsb_dev_sentences(shared_data, n):
    sentences = []
    with open(shared_data / "stsb" / "sts-dev.csv", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            sentences += [row[5], row[6]]
    return sentences[:n]


def _cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def encoder():
    return Encoder.load("minilm", batch_size=32)


@pytest.fixture(scope="module")
def sentence_transformer():
    from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top

    return SentenceTransformer(minilm_folder(), device="cpu")


def test_minilm_matches_sentence_transformers(encoder, sentence_transformer, shared_data):
    sentences = _stsb_dev_sentences(shared_data, 200)
    ours = encoder.encode(sentences)
    reference = sentence_transformer.encode(sentences)
    cosines = _cosines(ours, reference)
    print(
        f"min cosine vs sentence-transformers over {len(sentences)} STS-B "
        f"dev sentences: {cosines.min():.8f}; max |diff| "
        f"{np.abs(ours - reference).max():.2e}"
    )
    assert ours.shape == (200, 384) and ours.dtype == np.float32
    assert cosines.min() >= 0.9999


def test_prompt_dim_truncation_and_edge_text(encoder, sentence_transformer):
    texts = ["Crème brûlée, ΑΣ 北京大学 [SEP] x", "word " * 300, "a cat"]
    ours = encoder.encode(texts, prompt="query: ", dim=128, batch_size=4, show_progress=True)
    reference = sentence_transformer.encode(texts, prompt="query: ")[:, :128]
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    assert ours.shape == (3, 128)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
    assert _cosines(ours, reference).min() >= 0.9999


def test_order_and_batching_do_not_change_results(encoder):
    texts = ["short", "a somewhat longer sentence about cats and dogs", "mid one", "x " * 40, "another"]
    full = encoder.encode(texts, batch_size=32)
    np.testing.assert_allclose(encoder.encode(texts, batch_size=2), full, atol=1e-5)
    np.testing.assert_allclose(encoder.encode(texts[::-1])[::-1], full, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


@pytest.mark.parametrize(
    "texts,match",
    [
        (["ok", ""], r"texts\[1\] is empty"),
        (["  \n"], r"texts\[0\] is empty"),
        (["ok", b"bytes"], r"texts\[1\] is a bytes"),
        ("a string", "not a single string"),
        (None, "texts must be a list of strings; got NoneType"),
    ],
)
def test_bad_texts(encoder, texts, match):
    with pytest.raises(UserError, match=match):
        encoder.encode(texts)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"dim": 385}, "dim must be an integer between 1 and 384"),
        ({"dim": 2.5}, "dim must be an integer"),
        ({"dim": True}, "dim must be an integer"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"batch_size": -1}, "batch_size must be a positive integer"),
        ({"prompt": 5}, "prompt must be a string or None; got int"),
    ],
)
def test_bad_arguments(encoder, kwargs, match):
    with pytest.raises(UserError, match=match):
        encoder.encode(["x"], **kwargs)


def test_bad_spec(tmp_path):
    with pytest.raises(UserError, match="Unknown model"):
        Encoder.load("nope")
    with pytest.raises(UserError, match="Unknown model"):
        Encoder.load(str(tmp_path))


def test_plain_folder_is_loaded_as_sentence_transformers(encoder):
    folder = Encoder.load(minilm_folder())
    assert folder.max_length == 256
    np.testing.assert_allclose(folder.encode(["a cat"]), encoder.encode(["a cat"]), atol=1e-6)


def test_training_workdir(tmp_path, monkeypatch):
    imported = bert_import.resolve_pretrained("minilm")
    config = ml_collections.ConfigDict({"model": imported.model_config.to_dict(), "data": {"max_length": 16}})
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))

    def fake_restore(workdir):
        assert workdir == str(tmp_path)
        return config, imported.params

    monkeypatch.setattr(checkpoint_io, "restore_params", fake_restore)
    loaded = Encoder.load(str(tmp_path))
    assert loaded.max_length == 16
    assert loaded.encode(["a cat"]).shape == (1, 384)


def test_length_sorted_batches_equal_one_text_at_a_time(encoder):
    texts = [
        "x " * 60,
        "a cat",
        "a somewhat longer sentence about cats and dogs",
        "mid length text here",
        "y " * 30,
        "z",
    ]
    batched = encoder.encode(texts, batch_size=4)
    one_by_one = np.concatenate([encoder.encode([t], batch_size=4) for t in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_progress_bar_only_on_long_encodes(encoder, capsys):
    texts = [f"text number {i}" for i in range(24)]
    encoder.encode(texts, batch_size=8)
    assert "Encoding" not in capsys.readouterr().err
    encoder.encode(texts, batch_size=1)
    assert "24/24" in capsys.readouterr().err
    encoder.encode(texts, batch_size=1, show_progress=False)
    assert "Encoding" not in capsys.readouterr().err
