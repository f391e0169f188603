"""Readers that turn the academic datasets' raw files into Gecko examples.

Each reader takes the dataset's files as released upstream (the layouts listed
in ../shared/data/PROVENANCE.md) and returns example dicts in the schema of
`jsonl.py`, in a deterministic order. How each dataset becomes examples:

- STS-B and SICK (`semantic similarity`, symmetric): a sentence pair whose
  gold score is at least `SIMILAR_SCORE` = 4.0 becomes (sentence 1, sentence 2)
  without a negative. 4 is "mostly equivalent, only unimportant details
  differ" in the STS annotation guidelines (0..5); on SICK's 1..5 relatedness
  scale 4 keeps the pairs judged closely related. STS-B train keeps 1,406 of
  5,749 pairs, SICK train 1,683 of 4,500.
- Banking77, TREC, MR (`classification`, symmetric): Gecko's triplets
  (arXiv 2403.20327). For each input x with label y, the positive is another
  input with label y and the negative an input with another label, both drawn
  uniformly by `np.random.default_rng(seed)` walking the inputs in file order.
  The three texts get the same suffix ` [N]` (N = the input's row), so that
  in-batch examples of one class, which are not negatives of each other, are
  trivially told apart by their ids rather than pushed apart. TREC uses the
  fine label (`DESC:manner`), MR the polarity.
- StackOverflow (`clustering`, symmetric): same-label pairs, the positive
  drawn like a classification positive, with the same id suffix.
- WikiQA and TrecQA (`question answering`, asymmetric): one example per
  correct answer sentence; the hard negative is a wrong candidate sentence of
  the same question, drawn by the rng, when the question has one.
"""

import collections
import csv
import os
from typing import Sequence

import numpy as np

from gecko_jax.data import jsonl
from gecko_jax.errors import UserError

Example = jsonl.Example

SIMILAR_SCORE = 4.0
STS_TASK = "semantic similarity"
CLASSIFICATION_TASK = "classification"
CLUSTERING_TASK = "clustering"
QA_TASK = "question answering"


def _bad(path: str, line_no: int, reason: str) -> UserError:
    return UserError(
        f"{path}:{line_no}: {reason}; the file does not have the upstream layout, fetch it again"
    )


def read_lines(path: str, encoding: str = "utf-8") -> list[str]:
    """Reads a text file's lines.

    Args:
        path: the file.
        encoding: its encoding (TREC and MR ship as latin-1).

    Returns:
        The lines without line ends.

    Raises:
        UserError: the file is missing or not in `encoding`.
    """
    if not os.path.isfile(path):
        raise UserError(
            f"{path}: file not found; point --config.data.data_dir at a folder laid out like "
            "../shared/data (see the README, Training data)"
        )
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode(encoding).splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not valid {encoding} at byte {e.start}; fetch the file again") from None


def _similar_pair(sentence1: str, sentence2: str, example_id: str) -> Example:
    return {
        "query": sentence1.strip(),
        "positive": sentence2.strip(),
        "task": STS_TASK,
        "symmetric": True,
        "id": example_id,
    }


def stsb(path: str) -> list[Example]:
    """Reads an STS Benchmark TSV (no header) into pairs scoring >= SIMILAR_SCORE.

    Args:
        path: e.g. `stsb/sts-train.csv`.

    Returns:
        Symmetric pairs, id "stsb-LINE".
    """
    examples = []
    for line_no, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        # Some lines carry two extra columns after sentence2; columns 4..6 are fixed.
        fields = next(csv.reader([line], delimiter="\t", quoting=csv.QUOTE_NONE))
        if len(fields) < 7:
            raise _bad(path, line_no, f"expected at least 7 tab-separated columns, got {len(fields)}")
        try:
            score = float(fields[4])
        except ValueError:
            raise _bad(path, line_no, f"score {fields[4]!r} is not a number") from None
        if score >= SIMILAR_SCORE and fields[5].strip() and fields[6].strip():
            examples.append(_similar_pair(fields[5], fields[6], f"stsb-{line_no}"))
    return examples


def sick(path: str) -> list[Example]:
    """Reads a SICK TSV (with header) into pairs with relatedness >= SIMILAR_SCORE.

    Args:
        path: e.g. `sick/SICK_train.txt`.

    Returns:
        Symmetric pairs, id "sick-PAIR_ID".
    """
    lines = read_lines(path)
    header = lines[0].split("\t") if lines else []
    needed = ("pair_ID", "sentence_A", "sentence_B", "relatedness_score")
    if any(name not in header for name in needed):
        raise _bad(path, 1, f"header must name {', '.join(needed)}")
    column = {name: header.index(name) for name in needed}
    examples = []
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < len(header):
            raise _bad(path, line_no, f"expected {len(header)} tab-separated columns, got {len(fields)}")
        try:
            score = float(fields[column["relatedness_score"]])
        except ValueError:
            raise _bad(path, line_no, "relatedness_score is not a number") from None
        first, second = fields[column["sentence_A"]], fields[column["sentence_B"]]
        if score >= SIMILAR_SCORE and first.strip() and second.strip():
            examples.append(_similar_pair(first, second, f"sick-{fields[column['pair_ID']]}"))
    return examples


def label_triplets(
    texts: Sequence[str],
    labels: Sequence[str],
    task: str,
    prefix: str,
    seed: int = 0,
    with_negatives: bool = True,
) -> list[Example]:
    """Gecko's classification-to-triplet conversion with a unique-id suffix.

    Args:
        texts: the inputs, in file order.
        labels: one label per input.
        task: the task string of the examples.
        prefix: the id prefix, e.g. "banking77".
        seed: seeds the draws (see the module docstring).
        with_negatives: draw a different-label negative; False gives pairs.

    Returns:
        One example per input whose label has at least one other input (and,
        for triplets, when some other label exists), id "PREFIX-ROW".
    """
    by_label = collections.defaultdict(list)
    for row, label in enumerate(labels):
        by_label[label].append(row)
    by_label = {label: np.array(rows) for label, rows in by_label.items()}
    rng = np.random.default_rng(seed)
    count = len(texts)
    outside = {}  # label -> the rows of every other label, built on first use.
    examples = []
    for row, (text, label) in enumerate(zip(texts, labels)):
        same = by_label[label]
        others = count - len(same)
        if len(same) < 2 or (with_negatives and others == 0):
            continue
        # Draw among the label's other rows by skipping over our own position.
        pick = int(rng.integers(len(same) - 1))
        positive = int(same[pick + (pick >= int(np.searchsorted(same, row)))])
        suffix = f" [{row}]"
        example = {
            "query": text + suffix,
            "positive": texts[positive] + suffix,
            "task": task,
            "symmetric": True,
            "id": f"{prefix}-{row}",
        }
        if with_negatives:
            if label not in outside:
                outside[label] = np.setdiff1d(np.arange(count), same, assume_unique=True)
            example["negative"] = texts[int(outside[label][rng.integers(others)])] + suffix
        examples.append(example)
    return examples


def banking77(path: str, seed: int = 0) -> list[Example]:
    """Reads Banking77's `train.csv` (`text,category`) into triplets."""
    lines = read_lines(path)
    rows = list(csv.reader(lines))
    if not rows or rows[0][:2] != ["text", "category"]:
        raise _bad(path, 1, 'header must be "text,category"')
    texts, labels = [], []
    for line_no, fields in enumerate(rows[1:], start=2):
        if len(fields) != 2:
            raise _bad(path, line_no, f"expected 2 CSV columns, got {len(fields)}")
        if fields[0].strip():
            texts.append(fields[0].strip())
            labels.append(fields[1])
    return label_triplets(texts, labels, CLASSIFICATION_TASK, "banking77", seed)


def trec(path: str, seed: int = 0) -> list[Example]:
    """Reads TREC's `train_5500.label` (`COARSE:fine question`, latin-1) into triplets."""
    texts, labels = [], []
    for line_no, line in enumerate(read_lines(path, encoding="latin-1"), start=1):
        if not line.strip():
            continue
        label, _, question = line.partition(" ")
        if ":" not in label or not question.strip():
            raise _bad(path, line_no, "expected 'COARSE:fine question'")
        texts.append(question.strip())
        labels.append(label)
    return label_triplets(texts, labels, CLASSIFICATION_TASK, "trec", seed)


def movie_reviews(folder: str, seed: int = 0) -> list[Example]:
    """Reads MR (`rt-polarity.pos` and `rt-polarity.neg`, latin-1) into triplets."""
    texts, labels = [], []
    for polarity in ("pos", "neg"):
        for line in read_lines(os.path.join(folder, f"rt-polarity.{polarity}"), encoding="latin-1"):
            if line.strip():
                texts.append(line.strip())
                labels.append(polarity)
    return label_triplets(texts, labels, CLASSIFICATION_TASK, "mr", seed)


def stackoverflow(folder: str, seed: int = 0) -> list[Example]:
    """Reads StackOverflow titles and labels into same-label pairs."""
    titles = read_lines(os.path.join(folder, "title_StackOverflow.txt"))
    labels_path = os.path.join(folder, "label_StackOverflow.txt")
    labels = [line.strip() for line in read_lines(labels_path)]
    if len(titles) != len(labels):
        raise UserError(f"{folder}: {len(titles)} titles but {len(labels)} labels; fetch the files again")
    kept = [(t.strip(), label) for t, label in zip(titles, labels) if t.strip()]
    return label_triplets(
        [t for t, _ in kept],
        [label for _, label in kept],
        CLUSTERING_TASK,
        "stackoverflow",
        seed,
        with_negatives=False,
    )


def answer_selection(path: str, prefix: str, seed: int = 0) -> list[Example]:
    """Reads WikiQA/TrecQA rows (`question \\t sentence \\t 0/1`) into QA examples.

    Args:
        path: e.g. `wikiqa/train.txt`.
        prefix: the id prefix, e.g. "wikiqa".
        seed: draws the hard negatives.

    Returns:
        One example per correct sentence, in file order, id "PREFIX-LINE".
    """
    candidates = collections.OrderedDict()  # question -> [(line, sentence, label)], in file order.
    for line_no, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3 or fields[2].strip() not in ("0", "1"):
            raise _bad(path, line_no, "expected 'question<TAB>sentence<TAB>0 or 1'")
        question, sentence = fields[0].strip(), fields[1].strip()
        if question and sentence:
            candidates.setdefault(question, []).append((line_no, sentence, fields[2].strip() == "1"))
    rng = np.random.default_rng(seed)
    examples = []
    for question, rows in candidates.items():
        wrong = [sentence for _, sentence, correct in rows if not correct]
        for line_no, sentence, correct in rows:
            if not correct:
                continue
            example = {
                "query": question,
                "positive": sentence,
                "task": QA_TASK,
                "symmetric": False,
                "id": f"{prefix}-{line_no}",
            }
            if wrong:
                example["negative"] = wrong[int(rng.integers(len(wrong)))]
            examples.append(example)
    return examples
