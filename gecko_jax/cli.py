"""Shared entry-point plumbing for the `launch/` scripts."""

import sys
from typing import Callable, Optional

from absl import app
from absl import flags

from gecko_jax.errors import UserError


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a one-line message for unknown `--config.` fields."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as err:
        # ml_collections raises these for `--config.FIELD=` when FIELD does not exist.
        overrides = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
        detail = str(err).strip("'\"").replace("\\n", " ").replace("\n", " ").replace("\\'", "")
        print(f"error: unknown config field ({detail}) among {', '.join(overrides)}; the fields "
              "are listed in gecko_jax/config_base.py", file=sys.stderr, flush=True)
        sys.exit(2)


def check_args(argv: list[str], *required: flags.FlagHolder) -> None:
    """Raises UserError for positional arguments or a `required` flag left unset.

    Checked in `main` rather than by absl's `mark_flag_as_required`, so the
    message is one line and the exit code 2 that `run` gives every UserError.
    """
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    for flag in required:
        if not flag.value:
            raise UserError(f"--{flag.name} is required")


def progress_printer(tool: str) -> Callable[[str], None]:
    """A `progress` callback printing `TOOL: LINE` to stderr, keeping stdout for results."""

    def progress(line: str) -> None:
        print(f"{tool}: {line}", file=sys.stderr, flush=True)

    return progress


def run(main: Callable[[list[str]], None],
        flags_parser: Optional[Callable[[list[str]], list[str]]] = None) -> None:
    """`absl.app.run(main)`, turning a `UserError` into one line and exit code 2.

    Args:
      main: the program.
      flags_parser: parses argv and returns what `main` receives; the default
        rejects unknown flags (with a one-line message for `--config.`).
    """

    def guarded(argv):
        try:
            main(argv)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)

    app.run(guarded, flags_parser=flags_parser or _parse_flags)
