"""Semantic textual similarity (STS) evaluation: Spearman of cosine vs gold.

Two file layouts are read, told apart by the first line:

* STS Benchmark: tab-separated, no header, no quoting, columns
  `genre, source, year, id, score, sentence1, sentence2`; some lines carry
  extra columns after sentence2, which are ignored.
* SICK: tab-separated with a header naming at least `sentence_A`,
  `sentence_B` and `relatedness_score`; the full `SICK.txt` release also has a
  `SemEval_set` column (TRAIN / TRIAL / TEST) that `split` selects on,
  test when none is given.

A folder is also accepted; `split` then picks the file (`sts-dev.csv`,
`SICK_test_annotated.txt`, ...), see `resolve_sts_file`.
"""

import csv
import dataclasses
import os

from absl import logging
import numpy as np
from scipy import stats

from gecko_jax.errors import UserError
from gecko_jax.evaluation.base import TextEncoder
from gecko_jax.evaluation.base import encode_normalized

# Split names users type, mapped to the canonical name used below. SICK calls
# its development set "trial".
_SPLIT_ALIASES = {
    "train": "train",
    "dev": "dev",
    "validation": "dev",
    "trial": "dev",
    "test": "test",
}

# File names per canonical split, STS Benchmark first, then SICK.
_SPLIT_FILES = {
    "train": ("sts-train.csv", "SICK_train.txt"),
    "dev": ("sts-dev.csv", "SICK_trial.txt"),
    "test": ("sts-test.csv", "SICK_test_annotated.txt", "SICK_test.txt"),
}

# The full SICK release: one file for all splits, told apart by SemEval_set.
_SICK_ALL_SPLITS_FILE = "SICK.txt"
_SICK_SPLIT_VALUES = {"train": "TRAIN", "dev": "TRIAL", "test": "TEST"}

_STSB_MIN_COLUMNS = 7
_SICK_REQUIRED_COLUMNS = ("sentence_A", "sentence_B", "relatedness_score")


@dataclasses.dataclass(frozen=True)
class StsDataset:
    """Sentence pairs with gold similarity scores.

    Attributes:
      sentences1: first sentence of each pair.
      sentences2: second sentence of each pair.
      scores: float64 [num_pairs] gold scores (STS-B 0..5, SICK 1..5).
      path: the file read.
      split: the split selected, or None when the whole file was used.
    """

    sentences1: list[str]
    sentences2: list[str]
    scores: np.ndarray
    path: str
    split: str | None


def _canonical_split(split: str) -> str:
    try:
        return _SPLIT_ALIASES[split.lower()]
    except KeyError:
        raise UserError(f"unknown split {split!r}; use one of {sorted(_SPLIT_ALIASES)}") from None


def resolve_sts_file(path: str, split: str | None) -> tuple[str, str | None, bool]:
    """Finds the file to read and the split it holds or is filtered on.

    Args:
      path: an STS file, or a folder holding per-split files
        (`sts-{train,dev,test}.csv`, `SICK_{train,trial,test_annotated}.txt`)
        or the single `SICK.txt`.
      split: train, dev (alias validation, trial) or test; None means test for
        a folder and, for a file, the one split it holds (see `load_sts` for
        a file of all splits).

    Returns:
      (file path, canonical split or None, whether the file holds exactly that
      split). When the last is False, rows may be kept by the file's
      SemEval_set column.

    Raises:
      UserError: the path does not exist or the folder has no file for the
        split.
    """
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file or folder")
    if not os.path.isdir(path):
        return path, None if split is None else _canonical_split(split), False
    canonical = _canonical_split(split or "test")
    for name in _SPLIT_FILES[canonical]:
        candidate = os.path.join(path, name)
        if os.path.isfile(candidate):
            return candidate, canonical, True
    candidate = os.path.join(path, _SICK_ALL_SPLITS_FILE)
    if os.path.isfile(candidate):
        return candidate, canonical, False
    wanted = ", ".join(_SPLIT_FILES[canonical] + (_SICK_ALL_SPLITS_FILE,))
    present = ", ".join(sorted(os.listdir(path))) or "nothing"
    raise UserError(
        f"{path}: no {canonical} split here (looked for {wanted}; found"
        f" {present}); choose another split or pass the file itself"
    )


def _parse_score(value: str, where: str) -> float:
    try:
        score = float(value)
    except ValueError:
        score = float("nan")
    if not np.isfinite(score):
        raise UserError(f"{where}: score {value!r} is not a number")
    return score


def _check_sentence(sentence: str, where: str, column: str) -> str:
    if not sentence.strip():
        raise UserError(f"{where}: {column} is empty")
    return sentence


def _read_stsb_rows(rows, first_row: list[str], path: str):
    """Yields (sentence1, sentence2, score) from STS Benchmark rows."""
    yield _stsb_pair(first_row, path, 1)
    for row in rows:
        if row:  # A blank line (e.g. at the end of the file) carries no pair.
            yield _stsb_pair(row, path, rows.line_num)


def _stsb_pair(row: list[str], path: str, line: int) -> tuple[str, str, float]:
    where = f"{path}:{line}"
    if len(row) < _STSB_MIN_COLUMNS:
        raise UserError(
            f"{where}: {len(row)} tab-separated columns, expected at least"
            f" {_STSB_MIN_COLUMNS} (genre, source, year, id, score, sentence1,"
            " sentence2) or a SICK header"
        )
    return (
        _check_sentence(row[5], where, "sentence1"),
        _check_sentence(row[6], where, "sentence2"),
        _parse_score(row[4], where),
    )


def _split_and_row_filter(
    file_path: str, header: list[str], split: str | None
) -> tuple[str | None, str | None]:
    """(split to report, split to keep rows of) for a file of unknown splits."""
    if "sentence_A" in header and "SemEval_set" in header:
        # The full SICK release mixes all three splits; like a folder, it
        # gives its test rows unless told otherwise.
        split = split or "test"
        return split, split
    if split is not None:
        logging.warning(
            "%s holds a single split (no SemEval_set column); split %r ignored, reading the whole file",
            file_path,
            split,
        )
    return None, None


def _read_sick_rows(rows, header: list[str], path: str, split: str | None):
    """Yields (sentence_A, sentence_B, score) from SICK rows after the header.

    Args:
      rows: csv reader positioned after the header.
      header: the column names.
      path: file name for error messages.
      split: canonical split to keep by the SemEval_set column, or None for
        all rows.
    """
    missing = [c for c in _SICK_REQUIRED_COLUMNS if c not in header]
    if missing:
        raise UserError(f"{path}:1: header lacks column(s) {', '.join(missing)}")
    index = {name: i for i, name in enumerate(header)}
    for row in rows:
        if not row:
            continue
        where = f"{path}:{rows.line_num}"
        if len(row) != len(header):
            raise UserError(f"{where}: {len(row)} tab-separated columns, the header has {len(header)}")
        if split is not None and row[index["SemEval_set"]].upper() != _SICK_SPLIT_VALUES[split]:
            continue
        yield (
            _check_sentence(row[index["sentence_A"]], where, "sentence_A"),
            _check_sentence(row[index["sentence_B"]], where, "sentence_B"),
            _parse_score(row[index["relatedness_score"]], where),
        )


def load_sts(path: str, split: str | None = None) -> StsDataset:
    """Reads STS pairs from an STS Benchmark or SICK file or folder.

    Args:
      path: file or folder; see `resolve_sts_file`.
      split: see `resolve_sts_file`. For a single file without a split column
        the split is ignored (with a warning) and the whole file is read; from
        a SICK file with a SemEval_set column, the split's rows are read, the
        test rows when no split is given.

    Returns:
      The pairs and scores.

    Raises:
      UserError: missing file, non-UTF-8 bytes, a malformed line (named as
        file:line), or no pairs.
    """
    file_path, split, file_is_split = resolve_sts_file(path, split)
    try:
        # newline="" lets the csv module handle the CRLF endings some SICK files
        # have; QUOTE_NONE because STS sentences contain unbalanced quotes.
        with open(file_path, encoding="utf-8", newline="") as f:
            rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            first_row = next(rows, None)
            if first_row is None:
                raise UserError(f"{file_path}: file is empty")
            row_filter = None
            if not file_is_split:
                split, row_filter = _split_and_row_filter(file_path, first_row, split)
            if "sentence_A" in first_row:
                pairs = list(_read_sick_rows(rows, first_row, file_path, row_filter))
            else:
                pairs = list(_read_stsb_rows(rows, first_row, file_path))
    except UnicodeDecodeError as e:
        raise UserError(f"{file_path}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise UserError(f"{file_path}: cannot read ({e.strerror})") from None
    if len(pairs) < 2:
        raise UserError(
            f"{file_path}: {len(pairs)} sentence pair(s)"
            f"{'' if split is None else f' in split {split}'}; need"
            " at least 2 for a correlation"
        )
    sentences1, sentences2, scores = zip(*pairs)
    return StsDataset(
        sentences1=list(sentences1),
        sentences2=list(sentences2),
        scores=np.asarray(scores, dtype=np.float64),
        path=file_path,
        split=split,
    )


def score_sts(
    encoder: TextEncoder,
    dataset: StsDataset,
    prompt: str | None = None,
    dim: int | None = None,
    batch_size: int | None = None,
    show_progress: bool = False,
) -> dict[str, float | int]:
    """Correlates cosine similarity of embedded pairs with the gold scores.

    Convention (MTEB's): correlations are fractions in [-1, 1], not x100; the
    published 82.03 for all-MiniLM-L6-v2 on STS-B test is 0.8203 here.

    Args:
      encoder: the model; each distinct sentence is encoded once.
      dataset: the pairs.
      prompt: instruction prefix for every sentence (STS is symmetric).
      dim: Matryoshka prefix width, or None for the full width.
      batch_size: encoder batch size, or None for its default.
      show_progress: draw a progress bar on stderr.

    Returns:
      `spearman` and `cosine_spearman` (the same number, the headline metric),
      `pearson` and `cosine_pearson` (likewise), and `num_pairs`. A correlation
      is NaN when either side is constant.
    """
    unique = list(dict.fromkeys(dataset.sentences1 + dataset.sentences2))
    row = {sentence: i for i, sentence in enumerate(unique)}
    embeddings = encode_normalized(
        encoder,
        unique,
        prompt=prompt,
        dim=dim,
        batch_size=batch_size,
        show_progress=show_progress,
    )
    first = embeddings[[row[s] for s in dataset.sentences1]]
    second = embeddings[[row[s] for s in dataset.sentences2]]
    cosine = np.sum(first * second, axis=1, dtype=np.float64)
    spearman = float(stats.spearmanr(cosine, dataset.scores).statistic)
    pearson = float(stats.pearsonr(cosine, dataset.scores).statistic)
    return {
        "spearman": spearman,
        "cosine_spearman": spearman,
        "pearson": pearson,
        "cosine_pearson": pearson,
        "num_pairs": len(dataset.scores),
    }


def evaluate_sts(
    encoder: TextEncoder,
    path: str,
    split: str | None = None,
    prompt: str | None = None,
    dim: int | None = None,
    batch_size: int | None = None,
    show_progress: bool = False,
) -> dict[str, float | int]:
    """Reads an STS file or folder and scores `encoder` on it.

    Args:
      encoder: the model.
      path: STS Benchmark or SICK file or folder; see `load_sts`.
      split: see `load_sts`.
      prompt: see `score_sts`.
      dim: see `score_sts`.
      batch_size: see `score_sts`.
      show_progress: see `score_sts`.

    Returns:
      The metrics of `score_sts` (correlations as fractions in [-1, 1]).
    """
    return score_sts(
        encoder,
        load_sts(path, split),
        prompt=prompt,
        dim=dim,
        batch_size=batch_size,
        show_progress=show_progress,
    )
