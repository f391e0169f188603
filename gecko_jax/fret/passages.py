"""FRet's input: a corpus of passages in JSON Lines, checked up front.

Each line is `{"id": str | int, "title": str (optional), "text": str}`. The
whole file is checked before any LLM work starts, so that a bad line is
reported as `FILE:LINE: ...` instead of failing a worker an hour in: ids must
be unique, texts non-empty. Files may be local or on GCS (read through
`tf.io.gfile`).
"""

import json
import zlib
from typing import Iterator

import tensorflow as tf

from gecko_jax.errors import UserError

Passage = dict[str, str]


def parse_passage(line: str, where: str) -> Passage:
    """One JSONL line as a passage with str `id`, `title` ('' if absent) and `text`.

    Raises:
      UserError: naming `where` (FILE:LINE) and the problem.
    """
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(
            f'{where}: not valid JSON ({e.msg}); each line must be {{"id": ..., "title": ..., "text": ...}}'
        ) from None
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object with id and text")
    if isinstance(obj.get("id"), bool) or not isinstance(obj.get("id"), (str, int)):
        raise UserError(f'{where}: "id" must be a string or an integer')
    text, title = obj.get("text"), obj.get("title") or ""
    if not isinstance(text, str) or not text.strip():
        raise UserError(f'{where}: "text" must be a non-empty string')
    if not isinstance(title, str):
        raise UserError(f'{where}: "title" must be a string')
    return {"id": str(obj["id"]), "title": title.strip(), "text": " ".join(text.split())}


def iter_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of the non-blank lines of a UTF-8 text file."""
    if not tf.io.gfile.exists(path):
        raise UserError(f"{path}: passages file not found; check --passages")
    with tf.io.gfile.GFile(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(
                    f"{path}:{number}: not valid UTF-8 (byte {e.start}); re-encode the file as UTF-8"
                ) from None
            if line.strip():
                yield number, line


def check_passages(path: str) -> int:
    """Checks every line of a passages file; returns how many passages it has.

    Raises:
      UserError: a bad line, a repeated id, or no passages at all.
    """
    seen: dict[str, int] = {}
    for number, line in iter_lines(path):
        passage = parse_passage(line, f"{path}:{number}")
        if passage["id"] in seen:
            raise UserError(
                f"{path}:{number}: id {passage['id']!r} repeats line "
                f"{seen[passage['id']]}; passage ids must be unique"
            )
        seen[passage["id"]] = number
    if not seen:
        raise UserError(f"{path}: no passages; give one JSON object per line")
    return len(seen)


def stable_hash(*parts: object) -> int:
    """A hash that is the same in every process (unlike `hash`)."""
    return zlib.crc32("\x1f".join(map(str, parts)).encode("utf-8"))
