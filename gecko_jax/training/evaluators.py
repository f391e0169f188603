"""Evaluation during training: the evaluators of `config.evals`, and the best checkpoint.

Each entry of `config.evals` (built with `config_base.evaluator(...)`) names a
task of `gecko_jax.evaluation.tasks`, its data (relative to `data.data_dir`),
Matryoshka dims and prompts, and how often it runs; it converts to an
`evaluation.eval_spec.EvalSpec`, the spec `launch/evaluate.py` scores too.
Every evaluator runs before the first step and after the last; in between,
every `every` steps (0: every `config.eval_every` steps). They run on the live,
sharded parameters, encoding `config.eval_batch_size` texts at a time.

Results are named `<evaluator>.<metric>[@<dim>]` (e.g. `stsb.spearman@128`)
and written to TensorBoard under `evals/` and to WORKDIR/metrics.jsonl as
`evals.stsb.spearman@128`; WORKDIR/eval.jsonl also gets one line per evaluation
(`{"step": N, "stsb.spearman@128": ...}`, what the sweep launcher reads). With
`config.best_metric` set to one of those names, the parameters of the best
evaluation so far are kept in WORKDIR/best, which loads like a workdir
(`Encoder.load('WORKDIR/best')`); best/best.json says which step and value they are.
"""

import dataclasses
import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import linen as nn

from gecko_jax import checkpoint_io
from gecko_jax import workdir_files
from gecko_jax.config_base import evaluator
from gecko_jax.encoder import Encoder
from gecko_jax.errors import UserError
from gecko_jax.evaluation import tasks
from gecko_jax.evaluation.eval_spec import EvalSpec
from gecko_jax.evaluation.prompts import Prompts
from gecko_jax.models.tower import truncate_and_normalize

EVAL_FILE = "eval.jsonl"
BEST_DIR = "best"
BEST_FILE = "best.json"
_BEST_MODES = ("max", "min")


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
            self._full[key] = self._encoder.encode(
                texts, prompt=prompt, batch_size=batch_size, show_progress=show_progress
            )
        full = self._full[key]
        return full if not dim else np.asarray(truncate_and_normalize(full, dim))

    @property
    def multi_vector_dim(self) -> int:
        return self._encoder.multi_vector_dim

    def encode_tokens(self, texts, prompt=None, dim=None, batch_size=None, show_progress=False):
        # Token vectors are only used by retrieval, once per dim: nothing to reuse.
        return self._encoder.encode_tokens(
            texts, prompt=prompt, dim=dim, batch_size=batch_size, show_progress=show_progress
        )

    @property
    def has_saliences(self) -> bool:
        return self._encoder.has_saliences

    def encode_tokens_and_saliences(
        self, texts, side, prompt=None, dim=None, batch_size=None, show_progress=False
    ):
        return self._encoder.encode_tokens_and_saliences(
            texts, side, prompt=prompt, dim=dim, batch_size=batch_size, show_progress=show_progress
        )


@dataclasses.dataclass(frozen=True)
class _Evaluation:
    """One configured evaluator with its data loaded and its prompts resolved."""

    spec: EvalSpec
    dataset: Any
    prompts: Prompts


def _data_path(data_dir: str, relative: str, field: str) -> str:
    path = os.path.join(data_dir, relative) if data_dir else relative
    if not os.path.exists(path):
        raise UserError(
            f"{field}: {path} does not exist; set --config.data.data_dir to the "
            f"folder holding {relative}, or remove the evaluator"
        )
    return path


def config_specs(config: ml_collections.ConfigDict) -> list[EvalSpec]:
    """The evaluators of `config.evals` as specs, their data relative to `data.data_dir`.

    An entry may leave fields out (as one given on the command line,
    `--config.evals="{'sts': {'task': 'sts', 'data': 'stsb/sts-dev.csv'}}"`
    does); they take the defaults of `config_base.evaluator`. An empty split,
    prompt, doc_prompt or doc_format is the spec's None: the default.

    Raises:
      UserError: an entry with an unknown or missing field, or an unknown task.
    """
    specs = []
    for name, entry in config.evals.items():
        try:
            entry = evaluator(**entry)
        except TypeError as err:
            raise UserError(
                f"--config.evals.{name}: {err}; see gecko_jax/config_base.py for the fields"
            ) from None
        tasks.check_task(entry.task)
        specs.append(
            EvalSpec(
                name,
                entry.task,
                entry.data,
                split=entry.split or None,
                dims=entry.dims,
                prompt=entry.prompt or None,
                doc_prompt=entry.doc_prompt or None,
                doc_format=entry.doc_format or None,
                every=entry.every,
            )
        )
    return specs


def _configured(config: ml_collections.ConfigDict) -> list[_Evaluation]:
    """The evaluators of `config.evals` with their data loaded."""
    evaluations = []
    for spec in config_specs(config):
        path = _data_path(config.data.data_dir, spec.data, f"evals.{spec.name}")
        evaluations.append(
            _Evaluation(
                spec, tasks.load_task_data(spec.task, path, spec.split), spec.prompts(config.data.format)
            )
        )
    return evaluations


def metric_names(spec: EvalSpec) -> list[str]:
    """The result names an evaluator produces, e.g. `stsb.spearman@128`."""
    return [
        f"{spec.name}.{metric}{f'@{dim}' if dim else ''}"
        for dim in spec.widths
        for metric in tasks.HEADLINE_METRICS[spec.task]
    ]


class Evaluators:
    """The configured evaluators, with their data loaded once, and the best-checkpoint keeper."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        model: nn.Module,
        vocabulary,
        workdir: str,
        mesh: jax.sharding.Mesh | None = None,
        start_step: int = 0,
    ):
        """Loads the evaluators' data.

        Args:
          config: the run config.
          model: the tower.
          vocabulary: its vocabulary.
          workdir: where eval.jsonl and best/ go.
          mesh: the mesh the evaluated parameters are sharded over, if any.
          start_step: the step the run starts after; eval.jsonl records of
            later steps (written before a crash) are dropped, as they are
            evaluated again.
        """
        self._config = config
        self._mesh = mesh
        if jax.process_index() == 0:
            workdir_files.keep_records_through(
                epath.Path(workdir) / EVAL_FILE, start_step if start_step else -1
            )
        self._model = model
        self._vocabulary = vocabulary
        self._workdir = workdir
        self._evaluations = _configured(config)
        multi_vector_dim = config.model.get("multi_vector_dim", 0)
        skipped = [e.spec.name for e in self._evaluations if e.spec.task != "retrieval"]
        if multi_vector_dim and skipped:
            # Retrieval scores token vectors (XTR); the other tasks need one vector per text.
            print(
                f"eval: skipping {', '.join(skipped)}: this tower gives token vectors "
                f"(model.multi_vector_dim={multi_vector_dim}) and only retrieval scores them",
                flush=True,
            )
            self._evaluations = [e for e in self._evaluations if e.spec.task == "retrieval"]
        self._best_metric = config.best_metric.removeprefix("evals.")
        self._best_value = None
        if self._best_metric:
            known = [n for e in self._evaluations for n in metric_names(e.spec)]
            if self._best_metric not in known:
                raise UserError(
                    f"best_metric={config.best_metric!r} is not produced by the "
                    f"evaluators; choose one of: "
                    f"{', '.join('evals.' + n for n in known) or 'none configured'}"
                )
            if config.best_mode not in _BEST_MODES:
                raise UserError(f"best_mode={config.best_mode!r}; use 'max' or 'min'")
            best = workdir_files.read_json(epath.Path(workdir) / BEST_DIR / BEST_FILE)
            if best is not None:
                self._best_value = best["value"]

    @property
    def enabled(self) -> bool:
        return bool(self._evaluations)

    def is_due(self, step: int) -> bool:
        """Whether `run(step, ...)` would evaluate anything."""
        return bool(self._due(step, step == self._config.total_steps))

    def _due(self, step: int, final: bool) -> list[_Evaluation]:
        if step == 0 or final:
            return self._evaluations
        due = []
        for evaluation in self._evaluations:
            every = evaluation.spec.every or self._config.eval_every
            if every and step % every == 0:
                due.append(evaluation)
        return due

    def run(self, step: int, params, writer, final: bool = False) -> dict:
        """Runs the evaluators due at `step` (all of them at step 0 and when `final`).

        Args:
          step: the training step the parameters are from.
          params: the live parameters.
          writer: a `MetricsWriter`.
          final: whether this is the evaluation after the last step.

        Returns:
          {result name: value} of the evaluators that ran (empty if none).
        """
        due = self._due(step, final or step == self._config.total_steps)
        if not due:
            return {}
        start = time.perf_counter()
        encoder = _PrefixCache(
            Encoder(
                self._model,
                params,
                self._vocabulary,
                max_length=self._config.data.max_length,
                batch_size=self._config.eval_batch_size,
                mesh=self._mesh,
            )
        )
        results = {}
        for evaluation in due:
            spec = evaluation.spec
            for dim in spec.widths:
                metrics = tasks.score_task(
                    encoder,
                    spec.task,
                    evaluation.dataset,
                    evaluation.prompts,
                    dim=dim,
                    ignore_identical_ids=spec.ignore_identical_ids,
                )
                suffix = f"@{dim}" if dim else ""
                for metric in tasks.HEADLINE_METRICS[spec.task]:
                    results[f"{spec.name}.{metric}{suffix}"] = float(metrics[metric])
        writer.scalars(step, results, prefix="evals")
        if jax.process_index() == 0:
            workdir_files.append_line(
                epath.Path(self._workdir) / EVAL_FILE, json.dumps({"step": step, **results})
            )
            shown = ", ".join(f"{k} {v:.4f}" for k, v in results.items())
            print(f"eval step {step} ({time.perf_counter() - start:.0f}s): {shown}", flush=True)
        if self._best_metric in results:
            self._keep_if_best(step, params, results[self._best_metric])
        return results

    def _keep_if_best(self, step: int, params, value: float) -> None:
        """Saves `params` to WORKDIR/best when `value` beats the best so far."""
        better = (
            self._best_value is None
            or not np.isfinite(self._best_value)
            or (value > self._best_value if self._config.best_mode == "max" else value < self._best_value)
        )
        if not better or not np.isfinite(value):
            return
        best_dir = epath.Path(self._workdir) / BEST_DIR
        steps_dir = epath.Path(checkpoint_io.checkpoint_dir(str(best_dir)))
        # The same step may be evaluated again after a resume.
        workdir_files.remove_tree(steps_dir / str(step))
        # Every process takes part in saving sharded arrays.
        ocp.PyTreeCheckpointer().save(steps_dir / str(step) / "state", {"params": params})
        if jax.process_index() == 0:
            for entry in steps_dir.iterdir():
                if entry.name != str(step):
                    workdir_files.remove_tree(entry)
            for name in (checkpoint_io.CONFIG_FILE, checkpoint_io.GIN_FILE):
                source = epath.Path(self._workdir) / name
                if source.exists():
                    source.copy(best_dir / name, overwrite=True)
            record = {"step": step, "metric": "evals." + self._best_metric, "value": value}
            workdir_files.write_text_atomic(best_dir / BEST_FILE, json.dumps(record))
            print(
                f"best {record['metric']} so far ({value:.4f}) at step {step}: saved to {best_dir}",
                flush=True,
            )
        self._best_value = value
