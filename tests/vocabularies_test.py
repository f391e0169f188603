"""Tests for gecko_jax.data.vocabularies and the WordPiece vocabulary."""

import csv
import os
import pickle

import pytest
import tensorflow as tf
import transformers

from gecko_jax.data import vocabularies
from gecko_jax.data.wordpiece import WordPieceVocabulary
from gecko_jax.errors import UserError
from gecko_jax.pretrained_packages import minilm_folder

# Each line probes one rule of the reference tokenizer.
EDGE_CASES = [
    "Crème brûlée, naïve café!",  # accents stripped
    "Ünïcödé ÀÉÎÕÜ Straße İstanbul",  # case + accents, dotted capital I
    "ΑΣ ΟΔΟΣ",  # capital sigma lowercases to σ even at the end of a word
    "北京大学是中国的大学。こんにちは世界 한국어",  # CJK isolated, kana/hangul not
    "\U0002b820x\U0002b900y",  # just outside the CJK ranges of `tokenizers`
    "don't stop---now... (really?) $5 #1 a`b ¿qué? «x» ½ ①",  # punctuation
    "a\ue000b a\u200bb x\u0378y \x00\ufffd",  # Co/Cf dropped, unassigned kept
    "tab\tnew\nline\r x\u3000y x\u00a0y a\u2028b\x85c",  # whitespace kinds
    "hello [SEP] world [cls] [MASK]x [UNK] [PAD][CLS]",  # special literals
    "x" + "\u0301" * 5 + " emoji 😀 ﬁne",
    "a" * 101 + " " + "é" * 100 + " " + "é" * 101,  # 100-character limit
    "",
    "   ",
]


def _stsb_sentences(shared_data, n):
    sentences = []
    with open(shared_data / "stsb" / "sts-dev.csv", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            sentences += [row[5], row[6]]
    return sentences[:n]


@pytest.fixture(scope="module")
def vocab():
    return vocabularies.get_vocabulary("minilm")


@pytest.fixture(scope="module")
def texts_and_reference(shared_data):
    texts = _stsb_sentences(shared_data, 400) + EDGE_CASES
    hf = transformers.BertTokenizer.from_pretrained(minilm_folder())
    reference = [hf(t, add_special_tokens=False)["input_ids"] for t in texts]
    return texts, reference


def test_special_ids(vocab):
    assert (vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id) == (0, 100, 101, 102)
    assert vocab.vocab_size == 30522


def test_python_encode_matches_hf(vocab, texts_and_reference):
    texts, reference = texts_and_reference
    for text, expected in zip(texts, reference):
        assert list(vocab.encode(text)) == expected, repr(text)


def test_tf_encode_matches_hf(vocab, texts_and_reference):
    texts, reference = texts_and_reference
    assert vocab.tokenize_tf(tf.constant(texts)).to_list() == reference
    for text, expected in zip(EDGE_CASES, reference[-len(EDGE_CASES) :]):
        assert vocab.encode_tf(tf.constant(text)).numpy().tolist() == expected


def test_encode_tf_inside_dataset_map(vocab):
    texts = ["Hello, world!", "Crème brûlée [SEP] x"]
    ds = tf.data.Dataset.from_tensor_slices(texts).map(vocab.encode_tf)
    got = [x.numpy().tolist() for x in ds]
    assert got == [list(vocab.encode(t)) for t in texts]


def test_decode(vocab):
    ids = [vocab.bos_id] + list(vocab.encode("Hello, unbelievable world!")) + [vocab.eos_id, vocab.pad_id]
    assert vocab.decode(ids) == "hello , unbelievable world !"
    assert vocab.decode_tf(tf.constant(ids)).numpy() == (b"hello , unbelievable world !")
    batch = tf.constant([[101, 7592, 102, 0], [101, 2088, 102, 0]])
    assert vocab.decode_tf(batch).numpy().tolist() == [b"hello", b"world"]


def test_wordpiece_spec_and_equality(vocab):
    path = os.path.join(minilm_folder(), "vocab.txt")
    other = vocabularies.get_vocabulary(f"wordpiece:{path}")
    assert other == vocab
    assert vocabularies.get_vocabulary("minilm") is vocab
    # transformers >= 5 saves tokenizer.json without a vocab.txt.
    json_path = os.path.join(minilm_folder(), "tokenizer.json")
    from_json = vocabularies.get_vocabulary(f"wordpiece:{json_path}")
    assert from_json == vocab
    assert from_json.encode("Crème brûlée [SEP]") == vocab.encode("Crème brûlée [SEP]")


def test_pickles(vocab):
    vocab.encode_tf(tf.constant("build the TF state first"))
    clone = pickle.loads(pickle.dumps(vocab))
    assert clone == vocab and clone.encode("Hello!") == vocab.encode("Hello!")


@pytest.mark.parametrize("spec", ["bpe:x", "minilm:x", "wordpiece:", "nope"])
def test_bad_spec(spec):
    with pytest.raises(UserError, match="(?i)vocabulary spec"):
        vocabularies.get_vocabulary(spec)


def test_missing_or_foreign_vocab_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        WordPieceVocabulary(str(tmp_path / "missing.txt"))
    path = tmp_path / "vocab.txt"
    path.write_text("a\nb\n")
    with pytest.raises(UserError, match="BERT vocab"):
        WordPieceVocabulary(str(path))
