"""The prompts a model sees in evaluation, by task type and side.

A model without prompts of its own (`plain` input format: all-MiniLM-L6-v2 and
other sentence-transformers models) sees the bare text, and a retrieval
document as `title + " " + text`, as BEIR and MTEB give it. A model trained in
Gecko's format (`gecko`, the `data.format` of its training config) sees what it
was trained on: `task: {task} | query: {text}` for queries and for both sides
of symmetric tasks, and `title: {title} | text: {text}` for documents, with
`none` for a missing title. The task descriptions of retrieval and STS are the
ones the recipes train with (`gecko_jax.data.sources`).
"""

import dataclasses

from gecko_jax.data import formats
from gecko_jax.data import sources
from gecko_jax.errors import UserError

TASK_TYPES = ("retrieval", "sts", "classification", "clustering")

_GECKO_TASKS = {
    "retrieval": sources.SQUAD_TASK,
    "sts": sources.NLI_TASK,
    "classification": "classification",
    "clustering": "clustering",
}


@dataclasses.dataclass(frozen=True)
class Prompts:
    """How texts of one task type are presented to a model.

    Attributes:
      query: prefix of queries, and of every text of a symmetric task; None for
        none.
      document: prefix of retrieval documents (after `doc_format`); None for
        none.
      doc_format: `str.format` template over `{title}` and `{text}` that
        renders a retrieval document.
      missing_title: what `{title}` becomes for a document without a title.
    """

    query: str | None = None
    document: str | None = None
    doc_format: str = "{title} {text}"
    missing_title: str = ""


def default_prompts(input_format: str, task_type: str) -> Prompts:
    """The prompts of a model trained in `input_format`, for `task_type`.

    Args:
      input_format: `plain` or `gecko` (see `gecko_jax.data.formats`).
      task_type: one of TASK_TYPES.

    Returns:
      The prompts.

    Raises:
      UserError: unknown format or task type.
    """
    formats.check_format(input_format)
    if task_type not in TASK_TYPES:
        raise UserError(f"unknown task type {task_type!r}; use one of {', '.join(TASK_TYPES)}")
    if input_format == "plain":
        return Prompts()
    return Prompts(
        query=formats.gecko_query(_GECKO_TASKS[task_type], ""),
        doc_format=formats.gecko_document("{text}", "{title}"),
        missing_title=formats.NONE_VALUE,
    )
