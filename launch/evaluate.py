r"""Evaluates an embedding model and prints one JSON object with the metrics.

    python launch/evaluate.py --model=SPEC --task=sts|retrieval --data=PATH \
        [--split=test] [--dim=N] [--output=FILE.json] [--prompt=...] \
        [--doc_prompt=...] [--doc_format='title: {title} | text: {text}'] \
        [--batch_size=N]

`--data` is, for `sts`, an STS Benchmark or SICK file (or a folder of per-split
files); for `retrieval`, a BEIR folder or a SQuAD v1.1 JSON file. Stdout holds
the JSON object only; logs and progress bars go to stderr. Correlations and
retrieval metrics are fractions (MTEB's convention), not percentages.
"""

import contextlib
import json
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags  # pylint: disable=g-import-not-at-top

from gecko_jax.errors import UserError  # pylint: disable=g-import-not-at-top
from gecko_jax.evaluation import retrieval  # pylint: disable=g-import-not-at-top
from gecko_jax.evaluation import sts  # pylint: disable=g-import-not-at-top

_TASKS = ("sts", "retrieval")
# Named in the command-line contract but not built yet.
_PLANNED_TASKS = ("classification", "clustering")

_MODEL = flags.DEFINE_string(
    "model", None, "Model SPEC: a training workdir, st:PATH, minilm, ...")
_TASK = flags.DEFINE_string("task", None, f"One of: {', '.join(_TASKS)}.")
_DATA = flags.DEFINE_string("data", None, "Dataset file or folder.")
_SPLIT = flags.DEFINE_string(
    "split", None,
    "Split of a folder (default test); a single-split file ignores it.")
_DIM = flags.DEFINE_integer(
    "dim", None, "Matryoshka prefix width; default the full width.")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Also write the JSON object to this file.")
_PROMPT = flags.DEFINE_string(
    "prompt", None, "Prompt for STS sentences or retrieval queries.")
_DOC_PROMPT = flags.DEFINE_string(
    "doc_prompt", None, "Prompt for retrieval documents.")
_DOC_FORMAT = flags.DEFINE_string(
    "doc_format", None,
    "Template over {title} and {text} for retrieval documents; default"
    " '{title} {text}'.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", None, "Texts per encoder batch; default the encoder's.")


def _check_flags() -> None:
    """Raises UserError for missing or invalid flags, before loading a model."""
    for flag in (_MODEL, _TASK, _DATA):
        if not flag.value:
            raise UserError(f"--{flag.name} is required")
    if _TASK.value in _PLANNED_TASKS:
        raise UserError(
            f"--task={_TASK.value} is not implemented yet; tasks: {', '.join(_TASKS)}")
    if _TASK.value not in _TASKS:
        raise UserError(f"unknown --task={_TASK.value}; tasks: {', '.join(_TASKS)}")
    if not os.path.exists(_DATA.value):
        raise UserError(f"--data={_DATA.value}: no such file or folder")
    output_dir = os.path.dirname(_OUTPUT.value or "") or "."
    if _OUTPUT.value and not os.path.isdir(output_dir):
        raise UserError(f"--output={_OUTPUT.value}: folder {output_dir} does not exist")
    for flag in (_DIM, _BATCH_SIZE):
        if flag.value is not None and flag.value <= 0:
            raise UserError(f"--{flag.name} must be positive, got {flag.value}")


def _load_dataset():
    """Reads --data; done before loading the model so data errors come fast."""
    if _TASK.value == "sts":
        return sts.load_sts(_DATA.value, _SPLIT.value)
    return retrieval.load_retrieval(_DATA.value, _SPLIT.value)


def _score(encoder, dataset) -> dict[str, float | int]:
    """Runs the task's metrics for `encoder` on `dataset`."""
    if _TASK.value == "sts":
        return sts.score_sts(
            encoder, dataset, prompt=_PROMPT.value, dim=_DIM.value,
            batch_size=_BATCH_SIZE.value, show_progress=True)
    return retrieval.evaluate_retrieval(
        encoder, dataset.corpus, dataset.queries, dataset.qrels,
        query_prompt=_PROMPT.value, doc_prompt=_DOC_PROMPT.value,
        dim=_DIM.value,
        doc_format=_DOC_FORMAT.value or retrieval.DEFAULT_DOC_FORMAT,
        batch_size=_BATCH_SIZE.value, show_progress=True)


def _finite_or_none(value):
    # A constant similarity gives a NaN correlation; strict JSON has no NaN.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv):
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    _check_flags()
    # Stdout must carry the JSON object alone, so anything a library prints
    # while loading or encoding is sent to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        dataset = _load_dataset()
        # Imported late: JAX and TensorFlow take seconds to start, and bad
        # flags or data should not wait for them.
        from gecko_jax.encoder import Encoder  # pylint: disable=g-import-not-at-top
        load_kwargs = {}
        if _BATCH_SIZE.value is not None:
            load_kwargs["batch_size"] = _BATCH_SIZE.value
        encoder = Encoder.load(_MODEL.value, **load_kwargs)
        metrics = _score(encoder, dataset)
    result = {key: _finite_or_none(value) for key, value in metrics.items()}
    result.update(model=_MODEL.value, task=_TASK.value, data=_DATA.value,
                  split=dataset.split, dim=_DIM.value)
    text = json.dumps(result, sort_keys=True)
    # Printed before writing --output so that a write failure loses nothing.
    print(text, flush=True)
    if _OUTPUT.value:
        try:
            with open(_OUTPUT.value, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        except OSError as e:
            raise UserError(f"--output={_OUTPUT.value}: {e.strerror}") from None


if __name__ == "__main__":
    from gecko_jax import cli  # pylint: disable=g-import-not-at-top
    cli.run(main)
