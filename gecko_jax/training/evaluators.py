"""Periodic evaluation during training: STS Spearman and retrieval metrics.

Runs before the first step, every `eval_every` steps and after the last one,
on the live (sharded) parameters. Each run appends one line to
WORKDIR/eval.jsonl and writes the numbers to TensorBoard under `eval/`.
"""

import json
import os
import time

import jax
import ml_collections
import numpy as np
from flax import linen as nn

from gecko_jax.encoder import Encoder
from gecko_jax.errors import UserError
from gecko_jax.evaluation.retrieval import evaluate_retrieval, load_retrieval
from gecko_jax.evaluation.sts import load_sts, score_sts
from gecko_jax.models.tower import truncate_and_normalize

EVAL_FILE = "eval.jsonl"


class _PrefixCache:
    """Encodes each (texts, prompt) once and serves Matryoshka prefixes from it.

    Evaluating several dims of one model would otherwise run the tower once per
    dim over the same texts.
    """

    def __init__(self, encoder: Encoder):
        self._encoder = encoder
        self._full = {}

    def encode(self, texts, prompt=None, dim=None, batch_size=None, show_progress=False):
        key = (tuple(texts), prompt)
        if key not in self._full:
            self._full[key] = self._encoder.encode(texts, prompt=prompt, batch_size=batch_size,
                                                   show_progress=show_progress)
        full = self._full[key]
        return full if not dim else np.asarray(truncate_and_normalize(full, dim))


def _path(data_dir: str, relative: str, field: str) -> str:
    path = os.path.join(data_dir, relative) if data_dir else relative
    if not os.path.exists(path):
        raise UserError(f"eval.{field}: {path} does not exist; set --config.data.data_dir to the "
                        f"folder holding {relative} or --config.eval.{field}='' to skip it")
    return path


class Evaluators:
    """The evaluations named in `config.eval`, with their data loaded once."""

    def __init__(self, config: ml_collections.ConfigDict, model: nn.Module, vocabulary,
                 workdir: str):
        self._config = config
        self._model = model
        self._vocabulary = vocabulary
        self._workdir = workdir
        ev, data_dir = config.eval, config.data.data_dir
        self._sts = load_sts(_path(data_dir, ev.sts_file, "sts_file")) if ev.sts_file else None
        self._retrieval = (load_retrieval(_path(data_dir, ev.retrieval_file, "retrieval_file"))
                           if ev.retrieval_file else None)
        self._dims = (None,) + tuple(ev.dims)

    @property
    def enabled(self) -> bool:
        return self._sts is not None or self._retrieval is not None

    def run(self, step: int, params, writer) -> dict:
        """Evaluates `params`; returns {metric name: value} (empty if nothing is configured)."""
        if not self.enabled:
            return {}
        ev = self._config.eval
        start = time.perf_counter()
        encoder = _PrefixCache(Encoder(self._model, params, self._vocabulary,
                                       max_length=self._config.data.max_length,
                                       batch_size=ev.batch_size))
        results = {}
        for dim in self._dims:
            suffix = f"@{dim}" if dim else ""
            if self._sts is not None:
                sts = score_sts(encoder, self._sts, prompt=ev.sts_prompt or None, dim=dim)
                results[f"sts_spearman{suffix}"] = sts["spearman"]
            if self._retrieval is not None:
                ret = evaluate_retrieval(
                    encoder, self._retrieval.corpus, self._retrieval.queries,
                    self._retrieval.qrels, query_prompt=ev.query_prompt or None,
                    doc_format=ev.doc_format, dim=dim)
                for name in ("ndcg@10", "recall@10", "mrr@10"):
                    results[f"retrieval_{name}{suffix}"] = ret[name]
        if jax.process_index() == 0:
            with open(os.path.join(self._workdir, EVAL_FILE), "a") as f:
                f.write(json.dumps({"step": step, **results}) + "\n")
            writer.scalars(step, results, prefix="eval")
            shown = ", ".join(f"{k} {v:.4f}" for k, v in results.items())
            print(f"eval step {step} ({time.perf_counter() - start:.0f}s): {shown}", flush=True)
        return results
