"""One entry point for the four evaluation tasks: read the data, score a model.

`launch/evaluate.py`, its `--suite` mode and the in-training evaluators all go
through `load_task_data` and `score_task`, so a number means the same thing
wherever it is printed.
"""

from typing import Any

from gecko_jax.errors import UserError
from gecko_jax.evaluation import aligner_retrieval
from gecko_jax.evaluation import classification
from gecko_jax.evaluation import clustering
from gecko_jax.evaluation import multi_vector
from gecko_jax.evaluation import retrieval
from gecko_jax.evaluation import sts
from gecko_jax.evaluation.base import TextEncoder
from gecko_jax.evaluation.prompts import TASK_TYPES, Prompts

TASKS = TASK_TYPES

# The metrics a summary (the --suite table, the console during training)
# shows for each task; the JSON output holds them all.
HEADLINE_METRICS = {
    "retrieval": ("ndcg@10", "recall@10", "recall@100", "mrr@10"),
    "sts": ("spearman",),
    "classification": ("accuracy", "f1"),
    "clustering": ("v_measure",),
}


def check_task(task: str) -> None:
    """Raises UserError unless `task` is one of TASKS."""
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")


def load_task_data(task: str, path: str, split: str | None = None) -> Any:
    """Reads the data of one task.

    Args:
      task: one of TASKS.
      path: `sts`: an STS Benchmark or SICK file or folder; `retrieval`: a
        BEIR folder or a SQuAD v1.1 JSON file; `classification`: a folder with
        train.csv and test.csv; `clustering`: a CSV of text and label.
      split: the split of an STS folder or BEIR folder (default test);
        classification and clustering have fixed files and refuse it.

    Returns:
      The dataset object the task's scorer takes.

    Raises:
      UserError: unknown task, or missing or malformed data.
    """
    check_task(task)
    if task == "sts":
        return sts.load_sts(path, split)
    if task == "retrieval":
        return retrieval.load_retrieval(path, split)
    if split not in (None, "test"):
        raise UserError(
            f"--split={split} does not apply to {task}: it reads"
            f" {'train.csv and test.csv' if task == 'classification' else 'one CSV file'}"
        )
    if task == "classification":
        return classification.load_classification(path)
    return clustering.load_clustering(path)


def score_task(
    encoder: TextEncoder,
    task: str,
    dataset: Any,
    prompts: Prompts,
    dim: int | None = None,
    batch_size: int | None = None,
    show_progress: bool | None = False,
    token_k: int = multi_vector.DEFAULT_TOKEN_K,
    ignore_identical_ids: bool = True,
    aligner_search: aligner_retrieval.SearchOptions = aligner_retrieval.SearchOptions(),
) -> dict[str, float | int | str]:
    """Scores `encoder` on a dataset from `load_task_data`.

    Args:
      encoder: the model.
      task: one of TASKS.
      dataset: what `load_task_data(task, ...)` returned.
      prompts: the prompts for this task (see `prompts.default_prompts`);
        symmetric tasks use `prompts.query` for every text.
      dim: Matryoshka prefix width, or None for the full width.
      batch_size: encoder batch size, or None for its default.
      show_progress: passed to the encoder.
      token_k: k' of multi-vector retrieval, for an encoder whose
        `multi_vector_dim` is set (see `multi_vector`).
      ignore_identical_ids: retrieval never retrieves for a query the
        document with its id (see `retrieval.evaluate_retrieval`).
      aligner_search: pruning, k' and alignment of retrieval for an encoder
        with AligneR's salience heads (`has_saliences`), which is scored by
        `aligner_retrieval` instead of XTR's token retrieval.

    Returns:
      The task's metrics (fractions, not percentages) and counts.
    """
    check_task(task)
    common = dict(dim=dim, batch_size=batch_size, show_progress=show_progress)
    if task == "retrieval":
        retrieval_kwargs = dict(
            query_prompt=prompts.query,
            doc_prompt=prompts.document,
            doc_format=prompts.doc_format,
            missing_title=prompts.missing_title,
            ignore_identical_ids=ignore_identical_ids,
            **common,
        )
        if getattr(encoder, "has_saliences", False):
            return aligner_retrieval.evaluate_aligner_retrieval(
                encoder,
                dataset.corpus,
                dataset.queries,
                dataset.qrels,
                options=aligner_search,
                **retrieval_kwargs,
            )
        if getattr(encoder, "multi_vector_dim", 0):
            return multi_vector.evaluate_multi_vector_retrieval(
                encoder, dataset.corpus, dataset.queries, dataset.qrels, token_k=token_k, **retrieval_kwargs
            )
        return retrieval.evaluate_retrieval(
            encoder, dataset.corpus, dataset.queries, dataset.qrels, **retrieval_kwargs
        )
    scorer = {
        "sts": sts.score_sts,
        "classification": classification.score_classification,
        "clustering": clustering.score_clustering,
    }[task]
    return scorer(encoder, dataset, prompt=prompts.query, **common)


def dataset_split(dataset: Any) -> str | None:
    """The split a dataset was read from, or None if it has none."""
    return getattr(dataset, "split", None)
