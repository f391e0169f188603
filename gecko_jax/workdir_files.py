"""Small files of a workdir, on a local disk or on GCS (`gs://...`).

A TPU pod trains into a bucket, so the config, the metric lines and the best
checkpoint's record go through `etils.epath`, which reads and writes both.
Object stores cannot append or rename in place: appending rewrites the
object, and an atomic write is a write to a temporary name and a rename
(a copy on GCS, still never a half-written file under the final name).
"""

import json
from typing import Any, Optional

from etils import epath

from gecko_jax.errors import UserError


def write_text_atomic(target: epath.PathLike, text: str) -> None:
    """Writes `text` so that readers see the old file or the whole new one."""
    target = epath.Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(target)


def append_line(target: epath.PathLike, line: str) -> None:
    """Appends one line (a newline is added) to a text file, creating it."""
    target = epath.Path(target)
    if _is_local(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        return
    old = target.read_text() if target.exists() else ""
    target.write_text(old + line + "\n")


def keep_records_through(target: epath.PathLike, step: int) -> None:
    """Rewrites a JSON-lines file of `{"step": N, ...}` records for a run resuming after `step`.

    Records of later steps go: the resumed run writes them again, and each
    step must appear once. A line that does not parse goes too: it is a
    record cut short by a crash mid-write, and the next one would be glued to
    it. The file is rewritten only when something is dropped.
    """
    target = epath.Path(target)
    if not target.exists():
        return
    kept, dropped = [], False
    for line in target.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            dropped = True
            continue
        if not isinstance(record, dict) or record.get("step", step + 1) > step:
            dropped = True
            continue
        kept.append(line)
    if dropped:
        write_text_atomic(target, "".join(line + "\n" for line in kept))


def read_json(source: epath.PathLike) -> Optional[Any]:
    """The parsed JSON file, or None if it does not exist.

    Raises:
      UserError: the file is not valid JSON (e.g. cut short by a full disk).
    """
    source = epath.Path(source)
    if not source.exists():
        return None
    try:
        return json.loads(source.read_text())
    except ValueError as err:
        raise UserError(
            f"{source} is damaged, not valid JSON ({err}); restore it from a copy, "
            "or delete it and rerun the command that wrote it"
        ) from err


def remove_tree(target: epath.PathLike) -> None:
    """Deletes a folder and everything in it, if it exists."""
    target = epath.Path(target)
    if target.exists():
        target.rmtree()


def _is_local(target: epath.Path) -> bool:
    return "://" not in str(target)
