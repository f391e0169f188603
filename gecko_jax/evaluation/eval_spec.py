"""One evaluation, wherever it is asked for: task, data, widths and prompts.

`launch/evaluate.py` builds an `EvalSpec` from its flags or reads a list of
them from a suite file (`read_suite`); each entry of a training config's
`config.evals` converts to one (`training.evaluators.config_specs`). All of
them are scored through `tasks.load_task_data` and `tasks.score_task`.
"""

import dataclasses
import json
import os

from gecko_jax.errors import UserError
from gecko_jax.evaluation import tasks
from gecko_jax.evaluation.prompts import Prompts, default_prompts

# The keys of a suite entry and the type of each value.
SUITE_KEYS = {
    "name": str,
    "task": str,
    "data": str,
    "split": str,
    "dim": int,
    "prompt": str,
    "doc_prompt": str,
    "doc_format": str,
    "ignore_identical_ids": bool,
}
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """An evaluation of a model: a task of `tasks.TASKS` on some data.

    Attributes:
      name: what its results are called (`NAME.spearman@128` in training).
      task: sts | retrieval | classification | clustering.
      data: its file or folder (see `tasks.load_task_data`).
      split: the split of an STS or BEIR folder; None for test.
      full: whether to score the full embedding.
      dims: Matryoshka prefix widths to score as well.
      prompt: prompt of queries and of every text of a symmetric task; None
        for the model's own (`prompts.default_prompts`), '' for none.
      doc_prompt: prompt of retrieval documents; None for the model's own.
      doc_format: template over {title} and {text} for retrieval documents;
        None for the model's own.
      ignore_identical_ids: retrieval never retrieves for a query the document
        with its id, as BEIR does.
      every: in training, run every N steps (0 = every `config.eval_every`);
        always before the first step and after the last.
    """

    name: str
    task: str
    data: str
    split: str | None = None
    full: bool = True
    dims: tuple[int, ...] = ()
    prompt: str | None = None
    doc_prompt: str | None = None
    doc_format: str | None = None
    ignore_identical_ids: bool = True
    every: int = 0

    @property
    def widths(self) -> tuple[int | None, ...]:
        """The widths scored, None for the full embedding, in that order."""
        return ((None,) if self.full else ()) + tuple(self.dims)

    def prompts(self, input_format: str) -> Prompts:
        """The prompts of a model trained in `input_format`, with this spec's overrides."""
        defaults = default_prompts(input_format, self.task)
        overrides = {
            key: value
            for key, value in (
                ("query", self.prompt),
                ("document", self.doc_prompt),
                ("doc_format", self.doc_format),
            )
            if value is not None
        }
        return dataclasses.replace(defaults, **overrides)


def read_suite(path: str) -> list[EvalSpec]:
    """Reads a suite: a JSON list of objects with the keys of SUITE_KEYS.

    `task` and `data` are required; `name` defaults to `TASK:BASENAME`, `dim`
    (one Matryoshka width instead of the full one) to the full width, null to
    the key's default.

    Args:
      path: the suite file.

    Returns:
      One spec per entry.

    Raises:
      UserError: an unreadable file or a bad entry, named as `--suite=PATH entry I`.
    """
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
    except OSError as e:
        raise UserError(f"--suite={path}: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"--suite={path}: not a JSON file ({e})") from None
    if not isinstance(entries, list) or not entries:
        raise UserError(f"--suite={path}: expected a non-empty JSON list of objects with 'task' and 'data'")
    return [_suite_spec(entry, f"--suite={path} entry {i}") for i, entry in enumerate(entries)]


def _suite_spec(entry, where: str) -> EvalSpec:
    if isinstance(entry, dict):
        entry = {key: value for key, value in entry.items() if value is not None}
    if not isinstance(entry, dict) or not {"task", "data"} <= set(entry):
        raise UserError(f"{where}: expected an object with 'task' and 'data'")
    unknown = sorted(set(entry) - set(SUITE_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; keys: {', '.join(sorted(SUITE_KEYS))}")
    for key, value in entry.items():
        wanted = SUITE_KEYS[key]
        # bool is a subclass of int, but `"dim": true` is a mistake, not 1.
        if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
            raise UserError(f"{where}: {key!r} must be {_TYPE_NAMES[wanted]}, got {json.dumps(value)}")
    tasks.check_task(entry["task"])
    dim = entry.pop("dim", None)
    check_dim(dim, where)
    entry.setdefault("name", f"{entry['task']}:{os.path.basename(os.path.normpath(entry['data']))}")
    return EvalSpec(**entry, full=dim is None, dims=() if dim is None else (dim,))


def check_dim(dim: int | None, where: str) -> None:
    """Raises UserError unless `dim` is None or a positive width."""
    if dim is not None and dim <= 0:
        raise UserError(f"{where}: dim must be a positive integer, got {dim}")
