"""A new output folder that appears whole or not at all (export and soup outputs)."""

import contextlib
import os
import shutil
from typing import Iterator

from gecko_jax.errors import UserError


def check_new(output: str) -> None:
    """Raises UserError unless `output` is absent or empty, inside a folder that exists."""
    if os.path.isfile(output) or (os.path.isdir(output) and os.listdir(output)):
        raise UserError(f"--output={output} already exists and is not empty; pass a new folder.")
    parent = os.path.dirname(output)
    if os.path.isfile(parent):
        raise UserError(f"--output={output}: {parent} is a file, not a folder; pass a path in a folder.")
    if not os.path.isdir(parent):
        raise UserError(f"--output={output}: folder {parent} does not exist.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(
            f"--output={output}: folder {parent} is not writable; pass a folder you can write to."
        )


@contextlib.contextmanager
def written_whole(output: str) -> Iterator[str]:
    """Yields a scratch folder beside `output`, renamed to `output` when the block succeeds.

    Readers never see a half-written `output`: a failed or interrupted block
    leaves nothing there, and its scratch folder is removed.

    Args:
      output: an absolute path that passed `check_new`.

    Yields:
      The scratch folder to write into; it exists and is empty.
    """
    partial = f"{output}.partial-{os.getpid()}"
    try:
        os.makedirs(partial)
    except OSError as err:
        raise UserError(
            f"--output={output}: cannot write in {os.path.dirname(output)} "
            f"({err.strerror}); pass a folder you can write to."
        ) from None
    try:
        yield partial
        if os.path.isdir(output):
            os.rmdir(output)
        os.replace(partial, output)
    finally:
        if os.path.isdir(partial):
            shutil.rmtree(partial)
