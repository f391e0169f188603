"""Input formats: how an example's fields become the texts the towers read.

`gecko` is Gecko's unified format (arXiv 2403.20327, Appendix B):

    query:              task: {task} | query: {query}
    asymmetric target:  title: {title} | text: {target}
    symmetric target:   task: {task} | query: {target}

Asymmetric targets (retrieval, QA, fact checking) are documents, so they carry
a title (`none` when there is none, as in the paper). Symmetric targets (STS,
NLI, classification, clustering) are the same kind of text as the query, so
they are written exactly like a query. A missing task is written `none` too,
by the same convention.

`plain` leaves every text unchanged, for fine-tuning a model that was trained
without prompts (e.g. all-MiniLM-L6-v2) or for data that already has them.

The same rules are implemented with TF string ops in `tasks.py`, for the SeqIO
path; `tests/data_tasks_test.py` checks the two agree.
"""

from typing import Any, Mapping

from gecko_jax.errors import UserError

FORMATS = ("gecko", "plain")

# Gecko evaluates these task families with the symmetric format (Table 9).
SYMMETRIC_TASKS = frozenset({"semantic similarity", "classification", "clustering", "pair classification"})

# Written in place of a missing task or title.
NONE_VALUE = "none"


def gecko_query(task: str | None, text: str) -> str:
    """Formats a query (or a symmetric target) as `task: {task} | query: {text}`.

    Args:
        task: the task description, or None.
        text: the query text.

    Returns:
        The formatted text.
    """
    return f"task: {task or NONE_VALUE} | query: {text}"


def gecko_document(text: str, title: str | None = None) -> str:
    """Formats an asymmetric target as `title: {title} | text: {text}`.

    Args:
        text: the document text.
        title: the document's title, or None.

    Returns:
        The formatted text.
    """
    return f"title: {title or NONE_VALUE} | text: {text}"


def is_symmetric(example: Mapping[str, Any]) -> bool:
    """Whether an example's targets use the symmetric format.

    An explicit `symmetric` field wins; otherwise the task decides, so that
    data labelled with one of Gecko's symmetric task strings needs no flag.

    Args:
        example: an example dict (see `jsonl.py`).

    Returns:
        True for the symmetric format.
    """
    if "symmetric" in example:
        return bool(example["symmetric"])
    return example.get("task") in SYMMETRIC_TASKS


def check_format(fmt: str) -> None:
    """Raises UserError unless `fmt` is a known format name."""
    if fmt not in FORMATS:
        raise UserError(
            f"unknown data format {fmt!r}; set --config.data.format to one of {', '.join(FORMATS)}"
        )


def format_example(example: Mapping[str, Any], fmt: str) -> dict[str, str]:
    """Formats one example's texts.

    Args:
        example: an example dict with `query`, `positive` and optionally
            `negative`, `task`, `title`, `negative_title`, `symmetric`.
        fmt: one of FORMATS.

    Returns:
        {'query': str, 'positive': str, 'negative': str}; `negative` is the
        empty string when the example has no negative.
    """
    check_format(fmt)
    negative = example.get("negative")
    if fmt == "plain":
        return {"query": example["query"], "positive": example["positive"], "negative": negative or ""}
    return {
        "query": gecko_query(example.get("task"), example["query"]),
        "positive": _gecko_target(example, example["positive"], example.get("title")),
        "negative": _gecko_target(example, negative, example.get("negative_title")) if negative else "",
    }


def _gecko_target(example: Mapping[str, Any], text: str, title: str | None) -> str:
    """Formats a positive or negative of `example` in the Gecko format."""
    if is_symmetric(example):
        return gecko_query(example.get("task"), text)
    return gecko_document(text, title)
