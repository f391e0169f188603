"""Example readers: SQuAD, SNLI and the bundled tiny set.

Every source returns a list of example dicts in the schema of `jsonl.py`
(`query`, `positive`, optional `negative`, `task`, `title`, `negative_title`,
`symmetric`, `id`), validated by the same rules, in a deterministic order.

- `tiny`: `bundled/tiny_pairs.jsonl`, 64 original sentences shipped with the
  package so a CPU run needs no downloaded data.
- `squad`: SQuAD v1.1 JSON. Each question is a query; its paragraph is the
  positive, titled with the article title (underscores to spaces,
  percent-escapes decoded); task "question answering", asymmetric format.
  The optional hard negative is another paragraph of the same article: one
  `np.random.default_rng(seed)` walks the questions in file order and draws,
  for each, uniformly among the article's other paragraphs. Same file and
  seed, same negatives. Articles with a single paragraph give no negative.
- `snli`: SNLI in SentEval's layout (`s1.SPLIT`, `s2.SPLIT`, `labels.SPLIT`).
  Pairs are grouped by premise (consecutive in these files); a premise with at
  least one entailed and one contradicting hypothesis gives one triplet
  (premise, first entailment, first contradiction); neutral pairs are unused.
  The task string is "semantic similarity": Gecko uses NLI to improve STS
  (+1.6 with the symmetric format, §1.5) and evaluates STS with that string,
  so training and evaluation prompts match. Texts are used as shipped (SNLI's
  space-tokenized punctuation included), stripped of surrounding whitespace.
"""

import collections
import json
import os
import urllib.parse
from typing import Any, Iterable

import numpy as np

from gecko_jax.data import jsonl
from gecko_jax.errors import UserError

Example = jsonl.Example

SQUAD_TASK = "question answering"
NLI_TASK = "semantic similarity"

_DATA_HELP = (
    "pass --config.data.data_dir=DIR, a folder laid out like ../shared/data: squad/train-v1.1.json or "
    "squad/train-du-split.json (SQuAD v1.1 JSON) and snli/ (SentEval's layout s1.dev, s2.dev, labels.dev); "
    "see the README"
)


def bundled_path() -> str:
    """Returns the path of the bundled `tiny_pairs.jsonl`."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundled", "tiny_pairs.jsonl")


def tiny() -> list[Example]:
    """Returns the bundled tiny training set."""
    return jsonl.read_jsonl(bundled_path())


def _checked(example: dict[str, Any], where: str) -> Example:
    """Validates a source-built example, turning a bad row into a UserError."""
    try:
        return jsonl.validate_example(example)
    except ValueError as e:
        raise UserError(f"{where}: {e}; the file looks damaged, fetch it again") from None


def _require_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise UserError(f"{what} not found at {path}; {_DATA_HELP}")


def squad_title(title: str) -> str:
    """Turns a SQuAD article title (a Wikipedia URL slug) into plain text."""
    return urllib.parse.unquote(title).replace("_", " ")


def squad(
    path: str, hard_negatives: bool = True, seed: int = 0, max_examples: int | None = None
) -> list[Example]:
    """Reads SQuAD v1.1 JSON as (question, paragraph[, other paragraph]) examples.

    Args:
        path: the SQuAD JSON file.
        hard_negatives: add another paragraph of the same article as negative.
        seed: picks the negatives (see the module docstring).
        max_examples: stop after this many questions (for quick tests).

    Returns:
        One example per question, in file order, with the question id as `id`.
    """
    _require_file(path, "SQuAD file")
    try:
        with open(path, encoding="utf-8") as f:
            articles = json.load(f)["data"]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not SQuAD v1.1 JSON ({e!r}); {_DATA_HELP}") from None
    rng = np.random.default_rng(seed)
    examples = []
    try:
        for article in articles:
            title = squad_title(article["title"])
            contexts = [p["context"].strip() for p in article["paragraphs"]]
            for p_index, paragraph in enumerate(article["paragraphs"]):
                for qa in paragraph["qas"]:
                    if max_examples is not None and len(examples) >= max_examples:
                        return examples
                    example = {
                        "query": qa["question"].strip(),
                        "positive": contexts[p_index],
                        "task": SQUAD_TASK,
                        "title": title,
                        "symmetric": False,
                        "id": qa["id"],
                    }
                    if hard_negatives and len(contexts) > 1:
                        # Draw among the other paragraphs: skip over our own index.
                        other = int(rng.integers(len(contexts) - 1))
                        other += other >= p_index
                        example.update(negative=contexts[other], negative_title=title)
                    examples.append(_checked(example, f"{path}: question {qa['id']}"))
    except (KeyError, TypeError) as e:
        raise UserError(f"{path}: not SQuAD v1.1 JSON (missing or bad field {e}); {_DATA_HELP}") from None
    return examples


def _read_lines(path: str) -> list[str]:
    _require_file(path, "SNLI file")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid UTF-8; {_DATA_HELP}") from None


def snli(folder: str, split: str = "dev", max_examples: int | None = None) -> list[Example]:
    """Reads SNLI (SentEval layout) as (premise, entailment, contradiction) triplets.

    Args:
        folder: the folder with `s1.SPLIT`, `s2.SPLIT` and `labels.SPLIT`.
        split: the file suffix, e.g. "dev", "test" or "train".
        max_examples: stop after this many triplets (for quick tests).

    Returns:
        One example per premise that has both an entailment and a
        contradiction, in file order, with id "snli-SPLIT-N" (N counts premises).
    """
    premises, hypotheses, labels = (
        _read_lines(os.path.join(folder, f"{name}.{split}")) for name in ("s1", "s2", "labels")
    )
    if not len(premises) == len(hypotheses) == len(labels):
        raise UserError(
            f"{folder}: s1.{split}, s2.{split} and labels.{split} have different line counts "
            f"({len(premises)}, {len(hypotheses)}, {len(labels)}); fetch the SNLI files again"
        )
    return nli_triplets(zip(premises, hypotheses, labels), f"snli-{split}", max_examples)


def nli_triplets(
    rows: Iterable[tuple[str, str, str]], id_prefix: str, max_examples: int | None = None
) -> list[Example]:
    """Groups (premise, hypothesis, label) rows by premise into NLI triplets.

    Args:
        rows: in file order; labels "entailment", "contradiction", "neutral".
        id_prefix: ids are "ID_PREFIX-N", N counting premises.
        max_examples: stop after this many triplets.

    Returns:
        One example per premise that has both an entailment and a contradiction.
    """
    groups = collections.defaultdict(dict)  # premise -> {label: first hypothesis}; dicts keep file order.
    for premise, hypothesis, label in rows:
        premise, hypothesis, label = premise.strip(), hypothesis.strip(), label.strip()
        if premise and hypothesis:
            groups[premise].setdefault(label, hypothesis)
    examples = []
    for index, (premise, by_label) in enumerate(groups.items()):
        if max_examples is not None and len(examples) >= max_examples:
            break
        if "entailment" in by_label and "contradiction" in by_label:
            example = {
                "query": premise,
                "positive": by_label["entailment"],
                "negative": by_label["contradiction"],
                "task": NLI_TASK,
                "symmetric": True,
                "id": f"{id_prefix}-{index}",
            }
            examples.append(_checked(example, f"{id_prefix}: premise {index}"))
    return examples
