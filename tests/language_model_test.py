"""Tests for gecko_jax.language_model on a tiny random Gemma."""

import jax
import numpy as np
import pytest

from gecko_jax.errors import UserError
from gecko_jax.language_model import LanguageModel
from gecko_jax.models.gemma import Gemma
from gemma_model_test import init, tiny_config  # pylint: disable=g-bad-import-order
from sentencepiece_vocab_test import tiny_vocabulary  # pylint: disable=g-bad-import-order

PROMPTS = ["the cat", "", "the cat sat at the cat the"]
CONTINUATIONS = [" the", "cat", " sat\n"]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    vocab = tiny_vocabulary(str(tmp_path_factory.mktemp("cache")))
    config = tiny_config(
        vocab_size=vocab.vocab_size, version=2, attn_logit_softcap=50.0, final_logit_softcap=30.0
    )
    return LanguageModel(config, init(config, seed=1), vocab, batch_size=2)


@jax.jit
def _log_softmax_logits(params, ids, mask):
    model = Gemma(
        tiny_config(
            vocab_size=params["embedder"]["embedding"].shape[0],
            version=2,
            attn_logit_softcap=50.0,
            final_logit_softcap=30.0,
        )
    )
    hidden = model.apply({"params": params}, ids, mask)
    return jax.nn.log_softmax(model.apply({"params": params}, hidden, method=Gemma.logits))


def full_log_probs(lm, ids):
    """Log-softmax of a plain (cache-free) forward pass over one sequence."""
    # Right-padded to one length, so that a single compilation serves all;
    # causal attention keeps the padding out of the real positions.
    padded = np.zeros((1, 32), np.int32)
    padded[0, : len(ids)] = ids
    mask = (np.arange(32) < len(ids)).astype(np.int32)[None]
    return np.asarray(_log_softmax_logits(lm.params, padded, mask))[0, : len(ids)]


def test_score_sums_continuation_log_probs(lm):
    # Three rows with batch_size 2: one batch has a filler row.
    scores = lm.score(PROMPTS, CONTINUATIONS)
    vocab = lm.vocabulary
    for prompt, continuation, got in zip(PROMPTS, CONTINUATIONS, scores):
        prefix = [vocab.bos_id] + list(vocab.encode(prompt))
        target = list(vocab.encode(continuation))
        log_probs = full_log_probs(lm, prefix + target)
        expected = sum(log_probs[len(prefix) - 1 + j, t] for j, t in enumerate(target))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_next_token_log_probs_read_candidates_after_the_prompt(lm):
    vocab = lm.vocabulary
    candidates = [5, 9, 17]
    got = lm.next_token_log_probs(PROMPTS, candidates)
    assert got.shape == (3, 3)
    for prompt, row in zip(PROMPTS, got):
        log_probs = full_log_probs(lm, [vocab.bos_id] + list(vocab.encode(prompt)))
        np.testing.assert_allclose(row, log_probs[-1, candidates], rtol=1e-5, atol=1e-4)


def test_cached_generation_equals_full_forward_greedy(lm):
    # Prompts of different lengths share a left-padded batch.
    generated = lm.generate_ids(PROMPTS, max_new_tokens=6)
    vocab = lm.vocabulary
    for prompt, got in zip(PROMPTS, generated):
        sequence = [vocab.bos_id] + list(vocab.encode(prompt))
        expected = []
        for _ in range(6):
            token = int(full_log_probs(lm, sequence)[-1].argmax())
            if token == vocab.eos_id:
                break
            expected.append(token)
            sequence.append(token)
        assert got == expected, prompt
    # One prompt alone decodes as it does in a batch.
    assert lm.generate_ids(PROMPTS[2:], max_new_tokens=6) == generated[2:]


def test_stop_token_ends_a_row_early(lm):
    full = lm.generate_ids(PROMPTS, max_new_tokens=6)
    stop = full[2][1]  # The second token of the longest prompt's continuation.
    stopped = lm.generate_ids(PROMPTS, max_new_tokens=6, stop_token_ids=[stop])
    for ids, got in zip(full, stopped):
        expected = ids[: ids.index(stop) + 1] if stop in ids else ids
        assert got == expected


def test_generate_text_sampling_and_stop(lm):
    texts = lm.generate(PROMPTS, max_new_tokens=6)
    assert texts == [lm.vocabulary.decode(ids) for ids in lm.generate_ids(PROMPTS, max_new_tokens=6)]
    sampled = lm.generate(PROMPTS, max_new_tokens=6, temperature=1.0, seed=3)
    assert sampled == lm.generate(PROMPTS, max_new_tokens=6, temperature=1.0, seed=3)
    for text, cut in zip(texts, lm.generate(PROMPTS, max_new_tokens=6, stop=["t", "\n"])):
        assert cut == text.split("t")[0].split("\n")[0]


def test_bad_arguments(lm):
    with pytest.raises(UserError, match="2 prompts but 1"):
        lm.score(["a", "b"], ["c"])
    with pytest.raises(UserError, match="empty"):
        lm.score(["a"], [""])
    with pytest.raises(UserError, match="list of strings"):
        lm.generate("a prompt", max_new_tokens=2)
    with pytest.raises(UserError, match="max_new_tokens"):
        lm.generate(["a"], max_new_tokens=0)
    with pytest.raises(UserError, match="Unknown model 'gpt2'; use 'gemma3-270m'"):
        LanguageModel.load("gpt2")
