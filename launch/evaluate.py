r"""Evaluates an embedding model and prints one JSON object with the metrics.

    python launch/evaluate.py --model=SPEC \
        --task=sts|retrieval|classification|clustering --data=PATH \
        [--split=test] [--dim=N] [--output=FILE.json] [--prompt=...] \
        [--doc_prompt=...] [--doc_format='title: {title} | text: {text}'] \
        [--batch_size=N] [--token_k=N] [--noignore_identical_ids] \
        [--alignment=top1|topk:K|topp:P] [--prune_doc=F] [--prune_query=F] \
        [--adapt_alignment=N]
    python launch/evaluate.py --model=SPEC --suite=SUITE.json [--output=FILE.json]

`--data` is, for `sts`, an STS Benchmark or SICK file (or a folder of per-split
files); for `retrieval`, a BEIR folder or a SQuAD v1.1 JSON file; for
`classification`, a folder with train.csv and test.csv; for `clustering`, a
CSV of text and label. Prompts default to the model's own (none for
sentence-transformers models, Gecko's for models trained in Gecko's format);
`--prompt=''` turns them off. Stdout holds the JSON object only; logs and
progress bars go to stderr. Metrics are fractions (MTEB's convention), not
percentages. A multi-vector (XTR) model is scored on retrieval by XTR's token
retrieval (gecko_jax/evaluation/multi_vector.py), each query token fetching
its `--token_k` best document tokens (default 40,000), with the same metrics.
An AligneR model (one with salience heads) is scored by AligneR's retrieval
(gecko_jax/evaluation/aligner_retrieval.py): the index holds each document's
`--prune_doc` most salient tokens, the query searches with its `--prune_query`
most salient ones (each fetching `--token_k`, default 4,000, index tokens),
and the candidates are ranked by sim under `--alignment`;
`--adapt_alignment=N` instead picks the alignment from the paper's grid on N
labelled queries and scores the others. As in BEIR, retrieval never returns
for a query the document with its id; `--noignore_identical_ids` lets it.

A suite is a JSON list of evaluations, each an object with `task` and `data`
and optionally `name`, `split`, `dim`, `prompt`, `doc_prompt`, `doc_format`,
`ignore_identical_ids` (true or false); the flags and each entry make one
`gecko_jax.evaluation.eval_spec.EvalSpec`, as training's `config.evals` do.
The model is loaded once; stdout gets a table of the headline metrics and
`--output` the full results as a JSON list.
"""

import contextlib
import json
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags  # pylint: disable=g-import-not-at-top

from gecko_jax import cli  # pylint: disable=g-import-not-at-top
from gecko_jax.errors import UserError  # pylint: disable=g-import-not-at-top
from gecko_jax.evaluation import aligner_retrieval  # pylint: disable=g-import-not-at-top
from gecko_jax.evaluation import multi_vector  # pylint: disable=g-import-not-at-top
from gecko_jax.evaluation import tasks  # pylint: disable=g-import-not-at-top
from gecko_jax.evaluation.eval_spec import EvalSpec, check_dim, read_suite  # pylint: disable=g-import-not-at-top
from gecko_jax.losses import alignment as alignment_lib  # pylint: disable=g-import-not-at-top

_MODEL = flags.DEFINE_string("model", None, "Model SPEC: a training workdir, st:PATH, minilm, ...")
_TASK = flags.DEFINE_string("task", None, f"One of: {', '.join(tasks.TASKS)}.")
_DATA = flags.DEFINE_string("data", None, "Dataset file or folder.")
_SUITE = flags.DEFINE_string("suite", None, "JSON list of evaluations to run instead of --task/--data.")
_SPLIT = flags.DEFINE_string(
    "split", None, "Split of a folder (default test); a single-split file ignores it."
)
_DIM = flags.DEFINE_integer("dim", None, "Matryoshka prefix width; default the full width.")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the results as JSON to this file.")
_PROMPT = flags.DEFINE_string(
    "prompt", None, "Prompt for queries and symmetric tasks; default the model's own."
)
_DOC_PROMPT = flags.DEFINE_string("doc_prompt", None, "Prompt for retrieval documents; default none.")
_DOC_FORMAT = flags.DEFINE_string(
    "doc_format",
    None,
    "Template over {title} and {text} for retrieval documents; default the"
    " model's own ('{title} {text}' for sentence-transformers models).",
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Texts per encoder batch; default the encoder's.")
_TOKEN_K = flags.DEFINE_integer(
    "token_k",
    None,
    "Multi-vector retrieval: document tokens each query token retrieves (k');"
    f" default {multi_vector.DEFAULT_TOKEN_K} (XTR), {aligner_retrieval.DEFAULT_TOKEN_K}"
    " (AligneR).",
)
_ALIGNMENT = flags.DEFINE_string(
    "alignment",
    None,
    "AligneR retrieval: pairwise alignment of refinement, top1 | topk:K | topp:P"
    " (P in percent of the document's tokens); default top1.",
)
_PRUNE_DOC = flags.DEFINE_float(
    "prune_doc",
    None,
    "AligneR retrieval: fraction of each document's tokens indexed, most salient first (beta^d); default 1.",
)
_PRUNE_QUERY = flags.DEFINE_float(
    "prune_query",
    None,
    "AligneR retrieval: fraction of each query's tokens searched with, most"
    " salient first (beta^q); default 1.",
)
_ADAPT_ALIGNMENT = flags.DEFINE_integer(
    "adapt_alignment",
    None,
    "AligneR retrieval: pick the alignment from the paper's grid on this many"
    " labelled queries (the metrics are over the others).",
)
# Flags that only AligneR retrieval reads.
_ALIGNER_FLAGS = (_ALIGNMENT, _PRUNE_DOC, _PRUNE_QUERY, _ADAPT_ALIGNMENT)
_IGNORE_IDENTICAL_IDS = flags.DEFINE_boolean(
    "ignore_identical_ids",
    True,
    "Retrieval: never retrieve for a query the document with its id, as BEIR"
    " does by default; --noignore_identical_ids lets it.",
)


def _from_flags() -> EvalSpec:
    for flag in (_TASK, _DATA):
        if not flag.value:
            raise UserError(f"--{flag.name} is required (or pass --suite=FILE)")
    tasks.check_task(_TASK.value)
    check_dim(_DIM.value, "--dim")
    return EvalSpec(
        _TASK.value,
        _TASK.value,
        _DATA.value,
        split=_SPLIT.value,
        full=_DIM.value is None,
        dims=() if _DIM.value is None else (_DIM.value,),
        prompt=_PROMPT.value,
        doc_prompt=_DOC_PROMPT.value,
        doc_format=_DOC_FORMAT.value,
        ignore_identical_ids=_IGNORE_IDENTICAL_IDS.value,
    )


def _from_suite(path: str) -> list[EvalSpec]:
    """The specs of a suite file; raises UserError for a flag the suite sets itself."""
    clashing = [
        f.name for f in (_TASK, _DATA, _SPLIT, _DIM, _PROMPT, _DOC_PROMPT, _DOC_FORMAT) if f.value is not None
    ]
    if _IGNORE_IDENTICAL_IDS.present:  # Its default is not None.
        clashing.append(_IGNORE_IDENTICAL_IDS.name)
    if clashing:
        raise UserError(f"--suite sets each evaluation itself; drop --{clashing[0]}")
    return read_suite(path)


def _check_paths(specs: list[EvalSpec]) -> None:
    for spec in specs:
        if not os.path.exists(spec.data):
            raise UserError(f"--data={spec.data}: no such file or folder")
    output_dir = os.path.dirname(_OUTPUT.value or "") or "."
    if _OUTPUT.value and not os.path.isdir(output_dir):
        raise UserError(f"--output={_OUTPUT.value}: folder {output_dir} does not exist")
    if _BATCH_SIZE.value is not None and _BATCH_SIZE.value <= 0:
        raise UserError(f"--batch_size must be positive, got {_BATCH_SIZE.value}")
    if _TOKEN_K.value is not None and _TOKEN_K.value <= 0:
        raise UserError(f"--token_k must be positive, got {_TOKEN_K.value}")


def _aligner_search() -> aligner_retrieval.SearchOptions:
    """AligneR's retrieval options from the flags; raises UserError for a bad one."""
    if _ALIGNMENT.value is not None and _ADAPT_ALIGNMENT.value:
        raise UserError("--adapt_alignment picks the alignment itself; drop --alignment")
    options = aligner_retrieval.SearchOptions(
        alignment=alignment_lib.parse_alignment(_ALIGNMENT.value or "top1"),
        prune_doc=1.0 if _PRUNE_DOC.value is None else _PRUNE_DOC.value,
        prune_query=1.0 if _PRUNE_QUERY.value is None else _PRUNE_QUERY.value,
        token_k=_TOKEN_K.value or aligner_retrieval.DEFAULT_TOKEN_K,
        adapt_queries=_ADAPT_ALIGNMENT.value or 0,
    )
    options.check()
    return options


def _check_aligner_flags(encoder) -> None:
    """Refuses AligneR's flags for a model without salience heads."""
    given = [flag.name for flag in _ALIGNER_FLAGS if flag.value is not None]
    if given and not getattr(encoder, "has_saliences", False):
        raise UserError(
            f"--{given[0]} is for AligneR models (trained with loss.name=aligner,"
            f" with salience heads); {_MODEL.value} has none, so drop it"
        )


def _finite_or_none(value):
    # A constant similarity gives a NaN correlation; strict JSON has no NaN.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _run(
    encoder, spec: EvalSpec, dataset, dim: int | None, aligner_search: aligner_retrieval.SearchOptions
) -> dict:
    metrics = tasks.score_task(
        encoder,
        spec.task,
        dataset,
        spec.prompts(getattr(encoder, "input_format", "plain")),
        dim=dim,
        batch_size=_BATCH_SIZE.value,
        show_progress=None,
        token_k=_TOKEN_K.value or multi_vector.DEFAULT_TOKEN_K,
        ignore_identical_ids=spec.ignore_identical_ids,
        aligner_search=aligner_search,
    )
    result = {key: _finite_or_none(value) for key, value in metrics.items()}
    result.update(
        model=_MODEL.value, task=spec.task, data=spec.data, split=tasks.dataset_split(dataset), dim=dim
    )
    return result


def _table(results: list[tuple[EvalSpec, dict]]) -> str:
    """A Markdown table of the headline metrics of each (spec, result)."""
    lines = ["| evaluation | task | dim | metrics |", "|---|---|---|---|"]
    for spec, result in results:
        shown = ", ".join(
            f"{name} {result[name]:.4f}" if result[name] is not None else f"{name} n/a"
            for name in tasks.HEADLINE_METRICS[spec.task]
        )
        lines.append(f"| {spec.name} | {spec.task} | {result['dim'] or 'full'} | {shown} |")
    return "\n".join(lines)


def main(argv):
    cli.check_args(argv, _MODEL)
    specs = _from_suite(_SUITE.value) if _SUITE.value else [_from_flags()]
    _check_paths(specs)
    aligner_search = _aligner_search()
    # Stdout must carry the results alone, so anything a library prints while
    # loading or encoding is sent to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        # Data first: errors in it should not wait for the model to load.
        datasets = [tasks.load_task_data(spec.task, spec.data, spec.split) for spec in specs]
        # Imported late: JAX and TensorFlow take seconds to start, and bad
        # flags or data should not wait for them.
        from gecko_jax.encoder import Encoder  # pylint: disable=g-import-not-at-top

        load_kwargs = {}
        if _BATCH_SIZE.value is not None:
            load_kwargs["batch_size"] = _BATCH_SIZE.value
        encoder = Encoder.load(_MODEL.value, **load_kwargs)
        _check_aligner_flags(encoder)
        results = []  # (spec, result), one per width scored.
        for spec, dataset in zip(specs, datasets):
            for dim in spec.widths:
                results.append((spec, _run(encoder, spec, dataset, dim, aligner_search)))
            if _SUITE.value:
                print(f"done: {spec.name}", flush=True)
    if _SUITE.value:
        text = json.dumps([dict(result, name=spec.name) for spec, result in results], sort_keys=True)
        print(_table(results), flush=True)
    else:
        text = json.dumps(results[0][1], sort_keys=True)
        # Printed before writing --output so that a write failure loses nothing.
        print(text, flush=True)
    if _OUTPUT.value:
        try:
            with open(_OUTPUT.value, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        except OSError as e:
            raise UserError(f"--output={_OUTPUT.value}: {e.strerror}") from None


if __name__ == "__main__":
    cli.run(main)
