"""sentence-transformers export: the folder loads in sentence-transformers
and in our `Encoder`, and both give the embeddings of the exported model."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gecko_jax.data import sentencepiece_vocab
from gecko_jax.data.vocabularies import get_vocabulary
from gecko_jax.encoder import Encoder
from gecko_jax.errors import UserError
from gecko_jax.export import tokenizer_files
from gecko_jax.export.sentence_transformers import export_model
from gecko_jax.models import gemma_import
from sentencepiece_vocab_test import tiny_metadata  # pylint: disable=g-bad-import-order
from workdir_helpers import (
    make_workdir,
    random_params,
    tiny_bert_config,  # pylint: disable=g-bad-import-order
    tiny_gemma_config,
)

sentence_transformers = pytest.importorskip("sentence_transformers")
transformers = pytest.importorskip("transformers")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = [
    "A man is playing a guitar.",
    "Crème brûlée, ΑΣ 北京大学 [SEP] x",
    "the cat  the\nx at",
    "word " * 60,
    "a cat",
]


def _min_cosine(a, b):
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def _check_round_trip(spec, folder, prompt_name=None, texts=TEXTS):
    """Exports `spec` and compares sentence-transformers and Encoder with it."""
    export_model(spec, folder)
    model = sentence_transformers.SentenceTransformer(folder, device="cpu")
    prompt = model.prompts.get(prompt_name) if prompt_name else None
    # Batches of 2 (padding rows included) instead of the default 64: the
    # same code paths at a fraction of the compute.
    ours = Encoder.load(spec, batch_size=2).encode(texts, prompt=prompt)
    theirs = model.encode(texts, prompt_name=prompt_name, batch_size=2)
    reloaded = Encoder.load(folder, batch_size=2).encode(texts, prompt=prompt)
    assert theirs.shape == ours.shape
    assert _min_cosine(theirs, ours) >= 0.9999
    assert _min_cosine(reloaded, ours) >= 0.9999
    return model


def test_minilm_exports_unchanged(tmp_path):
    # Short texts: one length bucket, one compilation per encoder.
    model = _check_round_trip("minilm", str(tmp_path / "out"), texts=TEXTS[:3])
    assert model.max_seq_length == 256
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Normalize"]


def test_bert_workdir_with_projection_and_prompts(tmp_path):
    config = tiny_bert_config(pooling="cls", projection_dim=16)
    config.export.query_prompt = "task: question answering | query: "
    workdir = make_workdir(tmp_path / "run", config, {3: random_params(config)})
    model = _check_round_trip(workdir, str(tmp_path / "out"), "query")
    assert model.prompts["query"] == "task: question answering | query: "
    assert model.prompts["document"] == "title: none | text: "
    assert model.get_embedding_dimension() == 16
    # Reloaded, the export keeps the run's Gecko format (and so its default
    # evaluation prompts); a plain folder stays plain.
    assert Encoder.load(str(tmp_path / "out")).input_format == "gecko"
    assert Encoder.load("minilm").input_format == "plain"


@pytest.fixture(name="tiny_sentencepiece")
def fixture_tiny_sentencepiece(tmp_path, monkeypatch):
    monkeypatch.setenv("GECKO_JAX_CACHE", str(tmp_path / "cache"))
    proto = sentencepiece_vocab.model_proto_from_gguf(tiny_metadata())
    return f"sentencepiece:{sentencepiece_vocab.write_model(proto)}"


@pytest.mark.parametrize(
    "wordpiece,pooling,projection,normalize,prompt_name",
    [
        (False, "last", 0, False, None),
        # configs/gecko_768.py:runlocal pairs a Gemma 3 with the MiniLM vocabulary.
        (True, "mean", 16, True, "query"),
    ],
)
def test_gemma_workdir_in_embeddinggemma_layout(
    tmp_path, tiny_sentencepiece, wordpiece, pooling, projection, normalize, prompt_name
):
    vocab, vocab_size = ("minilm", 30522) if wordpiece else (tiny_sentencepiece, 279)
    config = tiny_gemma_config(
        vocab, vocab_size, pooling=pooling, projection_dim=projection, normalize=normalize
    )
    workdir = make_workdir(tmp_path / "run", config, {2: random_params(config)})
    folder = str(tmp_path / "out")
    model = _check_round_trip(workdir, folder, prompt_name)
    assert type(model[0].auto_model).__name__ == "Gemma3TextModel"
    hf_config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert hf_config["use_bidirectional_attention"]
    assert hf_config["layer_types"] == ["sliding_attention", "full_attention"]
    # Hence Encoder.load(folder) above took the hf: reader, which also loads
    # EmbeddingGemma's own folder.
    assert gemma_import.is_gemma_folder(folder)


@pytest.mark.slow
def test_gemma3_tokenizer_files_tokenize_like_us(tmp_path, shared_data):
    vocab = get_vocabulary("gemma3-270m")
    tokenizer_files.write_tokenizer(vocab, str(tmp_path), max_length=64)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    texts = list(TEXTS)
    with open(shared_data / "stsb" / "sts-dev.csv", encoding="utf-8") as f:
        texts += [line.split("\t")[5] for line in f][:300]
    for text in texts:
        ours = [vocab.bos_id, *vocab.encode(text)[:62], vocab.eos_id]
        assert tokenizer(text, truncation=True)["input_ids"] == ours, text


@pytest.mark.slow
def test_trained_runlocal_workdir(tmp_path):
    workdir = tmp_path / "run"
    env = dict(os.environ, XLA_FLAGS="")
    subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "launch", "train.py"),
            f"--config={REPO}/configs/gecko_768.py:runlocal",
            f"--workdir={workdir}",
            "--config.total_steps=2",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "launch", "export.py"),
            f"--model={workdir}",
            f"--output={tmp_path / 'out'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    model = sentence_transformers.SentenceTransformer(str(tmp_path / "out"), device="cpu")
    ours = Encoder.load(str(workdir)).encode(TEXTS)
    assert _min_cosine(model.encode(TEXTS), ours) >= 0.9999


def test_bad_outputs_and_towers(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        export_model("minilm", str(tmp_path / "full"))
    with pytest.raises(UserError, match="does not exist"):
        export_model("minilm", str(tmp_path / "no" / "out"))
    with pytest.raises(UserError, match="Unknown model"):
        export_model("nope", str(tmp_path / "out"))
    config = tiny_gemma_config("minilm", 30522, gemma_version=2)
    workdir = make_workdir(tmp_path / "run", config, {1: random_params(config)})
    with pytest.raises(UserError, match="Gemma 3 only"):
        export_model(workdir, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")
    assert not [p for p in os.listdir(tmp_path) if "partial" in p]


def test_cli_error_is_one_line():
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "launch", "export.py"), "--model=minilm"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --output is required"
