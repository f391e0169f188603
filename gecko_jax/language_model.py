"""`LanguageModel`: a Gemma decoder that scores and generates text.

    from gecko_jax import LanguageModel
    lm = LanguageModel.load("gemma3-270m")
    lm.score(["The capital of France is"], [" Paris"])   # log-probabilities
    lm.generate(["Write a haiku about rain."], max_new_tokens=32)

This is the LLM of the FRet pipeline: it writes queries for passages and
reranks candidates by query likelihood. Every sequence starts with bos, then
the prompt's tokens, then (for `score`) the continuation's tokens, each part
tokenized on its own so that the continuation's tokens do not depend on the
prompt.

`score` right-pads a batch and reads one log-probability per continuation
token; only the continuation's positions go through the output layer, one
row at a time, because [batch, length, 262k] float32 logits would take
gigabytes. `next_token_log_probs` reads a few candidate next tokens (FRet's
relevance labels) from the same single forward pass.
`generate` left-pads the prompts so that they all end in the same slot,
fills a KV cache in one pass, then decodes one token per step inside a
jitted `while_loop` that stops when every row has emitted eos. Batch sizes and
lengths are rounded up to buckets so that a handful of shapes compile.
"""

import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gecko_jax.data.vocabularies import get_vocabulary
from gecko_jax.errors import UserError
from gecko_jax.text_inputs import check_texts
from gecko_jax.models import gemma_import
from gecko_jax.models import specs
from gecko_jax.models.gemma import Gemma, GemmaConfig, init_cache

_MIN_BUCKET = 16
# Past this length, lengths round up to a multiple of it rather than to a
# power of two: a 300-token prompt then runs as 320 tokens, not 512, at the
# price of a few more compilations.
_BUCKET_STEP = 64


def _bucket(n: int) -> int:
    """The padded length for `n` tokens: a power of two up to `_BUCKET_STEP`, then its multiples."""
    if n <= _BUCKET_STEP:
        return max(_MIN_BUCKET, 1 << (max(n, 1) - 1).bit_length())
    return -(-n // _BUCKET_STEP) * _BUCKET_STEP


class LanguageModel:
    """A causal Gemma with its tokenizer.

    Attributes:
      config: the model's `GemmaConfig` (attention 'causal').
      params: its parameters (on device).
      vocabulary: the seqio vocabulary (bos, eos and pad ids included).
      batch_size: default rows per forward pass.
    """

    def __init__(self, config: GemmaConfig, params: Any, vocabulary: Any, batch_size: int = 8):
        """Wraps a model.

        Args:
          config: a Gemma config; its attention mode is forced to 'causal'.
          params: `Gemma(config)` parameters (numpy or jax leaves).
          vocabulary: a seqio vocabulary with bos/eos/pad ids.
          batch_size: default batch size of `score` and `generate`.
        """
        self.config = config.replace(attention="causal")
        self.model = Gemma(self.config)
        self.params = jax.tree.map(jnp.asarray, params)
        self.vocabulary = vocabulary
        self.batch_size = batch_size

    @classmethod
    def load(cls, spec: str, batch_size: int = 8, dtype: str = "float32") -> "LanguageModel":
        """Loads a pretrained Gemma.

        Args:
          spec: 'gemma3-270m', 'gguf:PATH', 'hf:PATH' or an HF Gemma folder
            (`models.specs.resolve_gemma`).
          batch_size: default batch size.
          dtype: compute dtype, 'float32' or 'bfloat16' (parameters stay
            float32).

        Returns:
          The `LanguageModel`.

        Raises:
          UserError: a spec that names no Gemma checkpoint (a BERT model or a
            training workdir included), an unknown dtype or an unreadable
            checkpoint.
        """
        dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
        if dtype not in dtypes:
            raise UserError(f"Unknown dtype {dtype!r}; use one of {sorted(dtypes)}.")
        checkpoint = gemma_import.load_checkpoint(specs.resolve_gemma(spec).spec)
        return cls(
            checkpoint.config.replace(dtype=dtypes[dtype]),
            checkpoint.params,
            get_vocabulary(checkpoint.vocab),
            batch_size=batch_size,
        )

    def tokens(self, text: str) -> list[int]:
        """The token ids of `text`, without bos or eos."""
        return [int(t) for t in self.vocabulary.encode(text)]

    # Scoring.

    @functools.partial(jax.jit, static_argnums=0)
    def _log_probs_at(
        self, params, ids: jax.Array, mask: jax.Array, positions: jax.Array, targets: jax.Array
    ) -> jax.Array:
        """log p(targets[b, c, k] | ids[b, :positions[b, c] + 1]), [B, C, K].

        Only the C read positions go through the [vocab]-wide output layer,
        one row at a time, so a long prompt costs no more than its forward
        pass.
        """
        hidden = self.model.apply({"params": params}, ids, mask)
        picked = jnp.take_along_axis(hidden, positions[..., None], axis=1)

        def row(args):
            h, target = args
            logits = self.model.apply({"params": params}, h, method=Gemma.logits)
            chosen = jnp.take_along_axis(logits, target, axis=-1)
            return chosen - jax.nn.logsumexp(logits, axis=-1, keepdims=True)

        return jax.lax.map(row, (picked, targets))

    def _right_padded(
        self, prefixes: list[list[int]], length: int, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """[batch_size, length] ids and mask of right-padded token lists."""
        ids = np.full((batch_size, length), self.vocabulary.pad_id, np.int32)
        mask = np.zeros((batch_size, length), np.int32)
        for r, tokens in enumerate(prefixes):
            ids[r, : len(tokens)] = tokens
            mask[r, : len(tokens)] = 1
        return ids, mask

    def score(
        self, prompts: Sequence[str], continuations: Sequence[str], batch_size: Optional[int] = None
    ) -> np.ndarray:
        """Total log-probability of each continuation given its prompt.

        Args:
          prompts: N prompts (may be empty strings).
          continuations: N non-empty continuations.
          batch_size: rows per forward pass; None uses `self.batch_size`.

        Returns:
          float64 [N] sums of natural-log probabilities.

        Raises:
          UserError: lengths differ, or a continuation has no tokens.
        """
        prompts = check_texts(prompts, "prompts", allow_empty=True)
        continuations = check_texts(continuations, "continuations", allow_empty=True)
        if len(prompts) != len(continuations):
            raise UserError(f"score() got {len(prompts)} prompts but {len(continuations)} continuations.")
        rows = []
        for i, (prompt, continuation) in enumerate(zip(prompts, continuations)):
            cont = self.tokens(continuation)
            if not cont:
                raise UserError(f"continuations[{i}] is empty; nothing to score.")
            rows.append(([self.vocabulary.bos_id] + self.tokens(prompt), cont))
        batch_size = batch_size or self.batch_size
        out = np.zeros(len(rows), np.float64)
        order = sorted(range(len(rows)), key=lambda i: -sum(map(len, rows[i])))
        for start in range(0, len(rows), batch_size):
            chunk = order[start : start + batch_size]
            length = _bucket(sum(map(len, rows[chunk[0]])))
            cont_length = _bucket(max(len(rows[i][1]) for i in chunk))
            ids, mask = self._right_padded([rows[i][0] + rows[i][1] for i in chunk], length, batch_size)
            # Position t predicts token t + 1; rows past a continuation's end
            # read position 0 and are masked out below.
            positions = np.zeros((batch_size, cont_length), np.int32)
            targets = np.zeros((batch_size, cont_length, 1), np.int32)
            wanted = np.zeros((batch_size, cont_length), bool)
            for r, i in enumerate(chunk):
                prefix, cont = rows[i]
                positions[r, : len(cont)] = len(prefix) - 1 + np.arange(len(cont))
                targets[r, : len(cont), 0] = cont
                wanted[r, : len(cont)] = True
            log_probs = np.asarray(
                self._log_probs_at(self.params, ids, mask, positions, targets)[..., 0], np.float64
            )
            out[chunk] = np.where(wanted, log_probs, 0.0).sum(1)[: len(chunk)]
        return out

    def next_token_log_probs(
        self, prompts: Sequence[str], token_ids: Sequence[int], batch_size: Optional[int] = None
    ) -> np.ndarray:
        """log p(token | prompt) of a few candidate next tokens, in one pass.

        Args:
          prompts: N prompts (bos is prepended).
          token_ids: K candidate token ids.
          batch_size: rows per forward pass; None uses `self.batch_size`.

        Returns:
          float64 [N, K] natural-log probabilities.
        """
        prompts = check_texts(prompts, "prompts", allow_empty=True)
        rows = [[self.vocabulary.bos_id] + self.tokens(p) for p in prompts]
        batch_size = batch_size or self.batch_size
        candidates = np.asarray(token_ids, np.int32)
        out = np.zeros((len(rows), len(candidates)), np.float64)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        for start in range(0, len(rows), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = self._right_padded([rows[i] for i in chunk], _bucket(len(rows[chunk[0]])), batch_size)
            positions = np.zeros((batch_size, 1), np.int32)
            positions[: len(chunk), 0] = [len(rows[i]) - 1 for i in chunk]
            targets = np.broadcast_to(candidates, (batch_size, 1, len(candidates)))
            log_probs = self._log_probs_at(self.params, ids, mask, positions, np.ascontiguousarray(targets))
            out[chunk] = np.asarray(log_probs, np.float64)[: len(chunk), 0]
        return out

    # Generation.

    @functools.partial(jax.jit, static_argnums=(0, 4))
    def _generate_ids(
        self,
        params,
        ids: jax.Array,
        mask: jax.Array,
        max_new_tokens: int,
        temperature: jax.Array,
        rng: jax.Array,
        stop_ids: jax.Array,
    ) -> jax.Array:
        """Decodes [B, max_new_tokens] ids after left-padded prompts.

        A row ends at eos or at one of `stop_ids` (kept in its output);
        decoding ends when every row has.
        """
        batch, prompt_len = ids.shape
        cache = init_cache(self.config, batch, prompt_len + max_new_tokens, self.config.dtype)
        positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
        hidden, cache = self.model.apply(
            {"params": params}, ids, mask, positions, cache, 0, method=Gemma.decode
        )
        eos = self.vocabulary.eos_id

        def pick(hidden_last, key):
            logits = self.model.apply({"params": params}, hidden_last, method=Gemma.logits)
            sampled = jax.random.categorical(key, logits / jnp.maximum(temperature, 1e-6))
            return jnp.where(temperature > 0, sampled, jnp.argmax(logits, axis=-1)).astype(jnp.int32)

        rng, key = jax.random.split(rng)
        first = pick(hidden[:, -1], key)
        out = jnp.full((batch, max_new_tokens), eos, jnp.int32).at[:, 0].set(first)
        state = (1, first, positions[:, -1] + 1, jnp.isin(first, stop_ids), cache, out, rng)

        def cond(state):
            step, _, _, done, *_ = state
            return (step < max_new_tokens) & ~jnp.all(done)

        def body(state):
            step, token, position, done, cache, out, rng = state
            hidden, cache = self.model.apply(
                {"params": params},
                token[:, None],
                jnp.ones((batch, 1), jnp.int32),
                position[:, None],
                cache,
                prompt_len + step - 1,
                method=Gemma.decode,
            )
            rng, key = jax.random.split(rng)
            token = jnp.where(done, eos, pick(hidden[:, 0], key))
            out = out.at[:, step].set(token)
            return (step + 1, token, position + 1, done | jnp.isin(token, stop_ids), cache, out, rng)

        return jax.lax.while_loop(cond, body, state)[5]

    def generate_ids(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        temperature: float = 0.0,
        batch_size: Optional[int] = None,
        seed: int = 0,
        stop_token_ids: Sequence[int] = (),
    ) -> list[list[int]]:
        """Like `generate`, but returns the new token ids (up to eos).

        A row also ends after any of `stop_token_ids`, which stays in its ids.
        """
        prompts = check_texts(prompts, "prompts", allow_empty=True)
        if max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1; got {max_new_tokens}.")
        if temperature < 0:
            raise UserError(f"temperature must be >= 0; got {temperature}.")
        vocab = self.vocabulary
        batch_size = batch_size or self.batch_size
        tokens = [[vocab.bos_id] + self.tokens(p) for p in prompts]
        rng = jax.random.PRNGKey(seed)
        stop_ids = jnp.asarray([vocab.eos_id, *stop_token_ids], jnp.int32)
        results: list[list[int]] = [[] for _ in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(tokens[i]))
        for start in range(0, len(prompts), batch_size):
            chunk = order[start : start + batch_size]
            length = _bucket(len(tokens[chunk[0]]))
            ids = np.full((batch_size, length), vocab.pad_id, np.int32)
            mask = np.zeros((batch_size, length), np.int32)
            for r, i in enumerate(chunk):
                ids[r, length - len(tokens[i]) :] = tokens[i]
                mask[r, length - len(tokens[i]) :] = 1
            rng, key = jax.random.split(rng)
            new = np.asarray(
                self._generate_ids(
                    self.params, ids, mask, max_new_tokens, jnp.float32(temperature), key, stop_ids
                )
            )
            for r, i in enumerate(chunk):
                row = new[r].tolist()
                results[i] = row[: row.index(vocab.eos_id)] if vocab.eos_id in row else row
        return results

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        temperature: float = 0.0,
        stop: Optional[Sequence[str]] = None,
        batch_size: Optional[int] = None,
        seed: int = 0,
    ) -> list[str]:
        """Continues each prompt.

        Args:
          prompts: N prompts.
          max_new_tokens: the most tokens generated per prompt.
          temperature: 0 for greedy decoding, else the sampling temperature.
          stop: strings that end a generation; the text is cut before the
            first one. A stop string that is one token also ends decoding of
            its row early; longer ones only cut the text.
          batch_size: prompts per batch; None uses `self.batch_size`.
          seed: seeds sampling when `temperature` > 0.

        Returns:
          N generated texts, without the prompts.

        Raises:
          UserError: bad arguments.
        """
        if isinstance(stop, str):
            stop = [stop]
        single_tokens = [self.tokens(s) for s in stop or ()]
        stop_token_ids = [t[0] for t in single_tokens if len(t) == 1]
        texts = [
            self.vocabulary.decode(ids)
            for ids in self.generate_ids(
                prompts, max_new_tokens, temperature, batch_size, seed, stop_token_ids
            )
        ]
        for s in stop or ():
            texts = [t.split(s, 1)[0] for t in texts]
        return texts
