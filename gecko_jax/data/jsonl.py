"""Strict reader for training examples stored as JSON Lines.

One JSON object per line:

    {"query": str, "positive": str,            # required, non-empty
     "negative": str,                          # optional hard negative
     "task": str,                              # optional task description
     "title": str,                             # optional title of the positive
     "negative_title": str,                    # optional title of the negative
     "symmetric": bool,                        # optional target format choice
     "id": str | int}                          # optional, carried as metadata

FRet output adds `positive_id`, `negative_id` and `positive_changed`, which
are accepted and ignored.

`title` belongs to the positive; the negative usually comes from another
document, so it gets its own `negative_title` rather than borrowing the
positive's (which would leak a matching title into the negative). `symmetric`
picks Gecko's symmetric target format; see `formats.is_symmetric` for the
default when it is absent. Optional fields may also be `null`, which means
absent, because many exporters write missing values that way.

Blank lines are skipped. An empty (or all-blank) text is dropped: an empty
`query` or `positive` drops its example, an empty optional text is treated as
absent, and the drops are counted in one warning per file. Anything else that
is not a valid example (bad JSON, non-UTF-8 bytes, a missing required field, a
wrong type) raises `UserError("PATH:LINE: ...")`, so a bad row is found before
training starts rather than silently dropped. Keys outside the contract (an exporter's
`label` or `score`, or a misspelt "negatve") are ignored, and named in one
warning per file so that a typo does not go unnoticed.
"""

import json
from typing import Any, Iterator

from absl import logging
from etils import epath

from gecko_jax.errors import UserError

REQUIRED_TEXT_FIELDS = ("query", "positive")
OPTIONAL_TEXT_FIELDS = ("negative", "task", "title", "negative_title")
# Provenance that FRet writes beside each example (data_pipelines/fret); read
# past without a warning, and not used for training.
FRET_METADATA_KEYS = ("positive_id", "negative_id", "positive_changed")
ALLOWED_KEYS = frozenset(
    REQUIRED_TEXT_FIELDS + OPTIONAL_TEXT_FIELDS + ("symmetric", "id") + FRET_METADATA_KEYS
)

Example = dict[str, Any]


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads` hook: a repeated key would silently keep the last value."""
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


class DropCounter:
    """Counts the empty texts a file's reader drops, for one warning per file.

    An empty (or all-blank) query or positive drops its whole example; an
    empty optional text (e.g. `negative`) is treated as absent.
    """

    def __init__(self, path: str, unit: str = "line"):
        """Starts counting for `path`, whose rows are called `unit` in the warning."""
        self.path, self.unit = path, unit
        self.examples = 0  # Examples dropped (empty query or positive).
        self.fields = 0  # Optional texts dropped.
        self.first = None  # (row, field) of the first drop.

    def drop(self, row: int | None, field: str, whole_example: bool) -> None:
        if whole_example:
            self.examples += 1
        else:
            self.fields += 1
        if self.first is None:
            self.first = (row, field)

    def warn(self) -> None:
        """Logs the one warning, if anything was dropped."""
        if self.first is None:
            return
        row, field = self.first
        logging.warning(
            "%s: dropped %d examples with an empty query or positive and %d empty optional texts "
            "(first: %s %s, field %r)",
            self.path,
            self.examples,
            self.fields,
            self.unit,
            row,
            field,
        )


def validate_example(
    obj: Any, dropped: DropCounter | None = None, row: int | None = None, also_required: tuple[str, ...] = ()
) -> Example | None:
    """Checks one decoded JSON value and returns the cleaned example.

    Args:
        obj: the value decoded from one line.
        dropped: counts empty texts instead of rejecting them; None rejects
            them (for examples the project builds itself, where an empty text
            is a bug).
        row: the line or record number, for `dropped`.
        also_required: optional text fields this file must have (FRet rows
            need their `task`).

    Returns:
        A new dict holding only the fields that are present (null optional
        fields are dropped), or None when `dropped` took the whole example.

    Raises:
        ValueError: with a short description of what is wrong; the reader adds
            the file and line.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    example = {}
    for key in REQUIRED_TEXT_FIELDS + OPTIONAL_TEXT_FIELDS:
        value = obj.get(key)
        required = key in REQUIRED_TEXT_FIELDS
        if value is None:
            if required:
                raise ValueError(
                    f'missing required field "{key}" (every line needs non-empty "query" and "positive")'
                )
            if key in also_required:
                raise ValueError(f'missing required field "{key}" (every line of this file needs one)')
            continue
        if not isinstance(value, str):
            raise ValueError(f'field "{key}" must be a string, got {type(value).__name__}')
        if not value.strip():
            if dropped is None:
                raise ValueError(f'field "{key}" is empty; give it text or leave the key out')
            dropped.drop(row, key, whole_example=required)
            if required:
                return None
            continue
        example[key] = value
    if obj.get("symmetric") is not None:
        if not isinstance(obj["symmetric"], bool):
            raise ValueError(
                f'field "symmetric" must be true or false, got {type(obj["symmetric"]).__name__}'
            )
        example["symmetric"] = obj["symmetric"]
    if obj.get("id") is not None:
        # bool is a subclass of int, but `true` as an id is almost surely a mistake.
        if isinstance(obj["id"], bool) or not isinstance(obj["id"], (str, int)):
            raise ValueError(f'field "id" must be a string or an integer, got {type(obj["id"]).__name__}')
        example["id"] = obj["id"]
    if "negative_title" in example and "negative" not in example:
        if "negative" in obj and dropped is not None:
            del example["negative_title"]  # Its negative was an empty text, dropped above.
        else:
            raise ValueError('"negative_title" is set but there is no "negative"')
    return example


def read_jsonl(path: str, also_required: tuple[str, ...] = ()) -> list[Example]:
    """Reads and validates every example in one JSONL file.

    Args:
        path: the file to read.
        also_required: optional fields every line must have (see
            `validate_example`).

    Returns:
        The examples in file order.

    Raises:
        UserError: the file is missing, unreadable, empty, or has a bad line.
    """
    return list(iter_jsonl(path, also_required))


def iter_jsonl(path: str, also_required: tuple[str, ...] = ()) -> Iterator[Example]:
    """Yields the validated examples of one JSONL file, reading it as it goes.

    A file of any size streams in constant memory. The errors are those of
    `read_jsonl`; a bad line raises when the reader reaches it, and the
    warnings about dropped texts and unknown keys come after the last line.

    Args:
        path: the file to read.
        also_required: optional fields every line must have.

    Yields:
        The examples in file order.

    Raises:
        UserError: the file is missing, unreadable, empty, or has a bad line.
    """
    if not epath.Path(path).is_file():
        raise UserError(f"{path}: training file not found; check the path in --config.data.train_files")
    count = 0
    unknown = {}  # Key -> first line it appears on.
    dropped = DropCounter(path)
    offset = 0  # Of the current line's first byte in the file.
    try:
        with epath.Path(path).open("rb") as f:
            for line_no, raw in enumerate(f, start=1):
                line_offset, offset = offset, offset + len(raw)
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise UserError(
                        f"{path}:{line_no}: not valid UTF-8 at byte offset {line_offset + e.start} of "
                        "the file; re-encode the file as UTF-8"
                    ) from None
                if line_no == 1:
                    line = line.removeprefix("\ufeff")  # A byte-order mark is legal UTF-8 but not JSON.
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line.rstrip("\r\n"), object_pairs_hook=_reject_duplicate_keys)
                except ValueError as e:
                    # JSONDecodeError's own text says "line 1", which would contradict line_no.
                    what = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
                    raise UserError(
                        f"{path}:{line_no}: not valid JSON ({what}); each line must be one JSON object"
                    ) from None
                if isinstance(obj, dict):
                    for key in set(obj) - ALLOWED_KEYS:
                        unknown.setdefault(key, line_no)
                try:
                    example = validate_example(obj, dropped, line_no, also_required)
                except ValueError as e:
                    raise UserError(f"{path}:{line_no}: {e}") from None
                if example is not None:
                    count += 1
                    yield example
    except OSError as e:
        raise UserError(f"{path}: cannot read training file ({e.strerror})") from None
    dropped.warn()
    if not count:
        raise UserError(f"{path}: no examples (the file is empty, only blank lines, or only empty texts)")
    if unknown:
        listed = ", ".join(f"{k!r} (line {n})" for k, n in sorted(unknown.items(), key=lambda kv: kv[1]))
        logging.warning(
            "%s: ignoring keys %s; the known keys are %s", path, listed, ", ".join(sorted(ALLOWED_KEYS))
        )
