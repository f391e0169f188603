"""The LLM behind FRet: one interface, a local JAX Gemma or an HTTP endpoint.

FRet (Gecko, arXiv 2403.20327) asks its LLM three things:

* `generate`: continue few-shot prompts (the task and query of a passage);
* `score`: log P(continuation | prompt), for query likelihood;
* `label_log_probs`: log P(label | prompt) for each of a few graded labels,
  for relevance classification.

`load_backend(spec)` picks the implementation from the spec:

    gemma3-270m | gguf:PATH | hf:PATH   the local JAX `LanguageModel`
    openai:MODEL@BASE_URL               an OpenAI-compatible /v1/completions
    gemini:MODEL[@BASE_URL]             Gemini generateContent

An endpoint that keeps failing raises `LLMError` (a `UserError`), which ends
the run with one line; the pipeline's finished shards stay on disk.
"""

import abc
from typing import Optional, Sequence

import numpy as np

from gecko_jax.errors import UserError

HTTP_SCHEMES = ("openai", "gemini")


class LLMError(UserError):
    """An LLM backend failed for good (after its retries) or was misused."""


class LLMBackend(abc.ABC):
    """What the FRet stages need from a language model."""

    name: str = "llm"

    @abc.abstractmethod
    def generate(self, prompts: Sequence[str], max_new_tokens: int,
                 stop: Sequence[str] = ()) -> list[str]:
        """Greedy continuations of `prompts`, each cut before its first `stop`."""

    @abc.abstractmethod
    def score(self, prompts: Sequence[str], continuations: Sequence[str]
              ) -> np.ndarray:
        """float64 [N]: total log P(continuations[i] | prompts[i]) in nats."""

    def label_log_probs(self, prompts: Sequence[str], labels: Sequence[str]
                        ) -> np.ndarray:
        """float64 [N, len(labels)]: log P(label | prompt) for every pair.

        The default scores every (prompt, label) pair with `score`; backends
        that read all labels from one forward pass override it.
        """
        pairs = [(p, l) for p in prompts for l in labels]
        scores = self.score([p for p, _ in pairs], [l for _, l in pairs])
        return scores.reshape(len(prompts), len(labels))


class LocalBackend(LLMBackend):
    """The JAX `LanguageModel` (batched, greedy, with its KV cache)."""

    def __init__(self, spec: str, batch_size: int = 8, dtype: str = "float32"):
        # Imported here so that HTTP-only pipeline workers do not load JAX models.
        from gecko_jax.language_model import LanguageModel  # pylint: disable=g-import-not-at-top
        self.name = spec
        self.model = LanguageModel.load(spec, batch_size=batch_size, dtype=dtype)

    def generate(self, prompts, max_new_tokens, stop=()):
        return self.model.generate(list(prompts), max_new_tokens, stop=list(stop))

    def score(self, prompts, continuations):
        return self.model.score(list(prompts), list(continuations))

    def label_log_probs(self, prompts, labels):
        first_tokens = [self.model.tokens(label) for label in labels]
        if all(len(t) == 1 for t in first_tokens):
            # Every label is one token: one forward pass per prompt reads them all.
            return self.model.next_token_log_probs(list(prompts), [t[0] for t in first_tokens])
        return super().label_log_probs(prompts, labels)


def is_http_spec(spec: str) -> bool:
    """Whether `spec` names an HTTP endpoint rather than a local model."""
    return spec.split(":", 1)[0] in HTTP_SCHEMES


def load_backend(spec: str, *, batch_size: int = 8, timeout_s: float = 120.0, max_retries: int = 4,
                 concurrency: int = 8, api_key: Optional[str] = None) -> LLMBackend:
    """Builds the backend a spec names (see the module docstring).

    Args:
      spec: the LLM spec.
      batch_size: prompts per forward pass of a local model.
      timeout_s: seconds before an HTTP request is abandoned and retried.
      max_retries: retries of a failed HTTP request, with exponential backoff.
      concurrency: HTTP requests in flight at once.
      api_key: the endpoint's key; None reads OPENAI_API_KEY or GEMINI_API_KEY.

    Returns:
      The backend.

    Raises:
      UserError: an unknown or malformed spec.
    """
    if is_http_spec(spec):
        from gecko_jax.fret import http_backend  # pylint: disable=g-import-not-at-top
        return http_backend.from_spec(spec, timeout_s=timeout_s, max_retries=max_retries,
                                      concurrency=concurrency, api_key=api_key)
    return LocalBackend(spec, batch_size=batch_size)
