"""What FRet needs from its LLM, whether a local JAX Gemma or an HTTP endpoint.

FRet (Gecko, arXiv 2403.20327) asks its LLM three things:

* `generate`: continue few-shot prompts (the task and query of a passage);
* `score`: log P(continuation | prompt), for query likelihood;
* `label_log_probs`: log P(label | prompt) for each of a few graded labels,
  for relevance classification.

`backends.load_backend` picks an implementation from a spec. An endpoint that
keeps failing raises `LLMError` (a `UserError`), which ends the run with one
line; the pipeline's finished shards stay on disk.
"""

import abc
from typing import Sequence

import numpy as np

from gecko_jax.errors import UserError


class LLMError(UserError):
    """An LLM backend failed for good (after its retries) or was misused."""


class LLMBackend(abc.ABC):
    """What the FRet stages need from a language model."""

    name: str = "llm"

    @abc.abstractmethod
    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()) -> list[str]:
        """Greedy continuations of `prompts`, each cut before its first `stop`."""

    @abc.abstractmethod
    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> np.ndarray:
        """float64 [N]: total log P(continuations[i] | prompts[i]) in nats."""

    def label_log_probs(self, prompts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        """float64 [N, len(labels)]: log P(label | prompt) for every pair.

        The default scores every (prompt, label) pair with `score`; backends
        that read all labels from one forward pass override it.
        """
        pairs = [(prompt, label) for prompt in prompts for label in labels]
        scores = self.score([prompt for prompt, _ in pairs], [label for _, label in pairs])
        return scores.reshape(len(prompts), len(labels))
