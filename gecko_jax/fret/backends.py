"""Picks FRet's LLM backend from a spec: a local JAX Gemma or an HTTP endpoint.

`load_backend(spec)` picks the implementation of `llm.LLMBackend`:

    gemma3-270m | gguf:PATH | hf:PATH   the local JAX `LanguageModel`
    openai:MODEL@BASE_URL               an OpenAI-compatible /v1/completions
    gemini:MODEL[@BASE_URL]             Gemini generateContent
"""

from typing import Optional

from gecko_jax.fret import http_backend
from gecko_jax.fret.llm import LLMBackend
from gecko_jax.language_model import LanguageModel

HTTP_SCHEMES = ("openai", "gemini")


class LocalBackend(LLMBackend):
    """The JAX `LanguageModel` (batched, greedy, with its KV cache)."""

    def __init__(self, spec: str, batch_size: int = 8, dtype: str = "float32"):
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


def load_backend(
    spec: str,
    *,
    batch_size: int = 8,
    timeout_s: float = 120.0,
    max_retries: int = 4,
    concurrency: int = 8,
    api_key: Optional[str] = None,
) -> LLMBackend:
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
        return http_backend.from_spec(
            spec, timeout_s=timeout_s, max_retries=max_retries, concurrency=concurrency, api_key=api_key
        )
    return LocalBackend(spec, batch_size=batch_size)
