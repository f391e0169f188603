"""Shared entry-point plumbing for the `launch/` scripts."""

import os
import sys
from typing import Callable, NoReturn, Optional

from absl import app
from absl import flags
from ml_collections import config_flags

from gecko_jax.errors import UserError


# How ml_collections begins the flag error when a config file's get_config raised.
_CONFIG_FILE_ERROR = "Error whilst parsing config file"


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with one-line messages for a refused `:ARG` or unknown field."""
    try:
        try:
            return flags.FLAGS(argv)
        except flags.Error as err:
            refused = _refused_config_arg(err)
            if refused:
                _fail(refused)
            # absl's own message and exit status for every other flag error.
            return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as err:
        # ml_collections raises these for `--config.FIELD=` when FIELD does not exist.
        overrides = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
        detail = str(err).strip("'\"").replace("\\n", " ").replace("\n", " ").replace("\\'", "")
        _fail(
            f"unknown config field ({detail}) among {', '.join(overrides)}; the fields are "
            "listed in gecko_jax/config_base.py"
        )


def _refused_config_arg(err: flags.Error) -> Optional[str]:
    """'--config=F.py:ARG: why' when a recipe's get_config refused its ARG, else None.

    The recipe's exception is the last line of the traceback ml_collections puts
    in the flag error; that line says which ARGs exist. Without an ARG, a failing
    get_config is a bug in the recipe and keeps its traceback.
    """
    head, found, trace = str(err).partition(f": {_CONFIG_FILE_ERROR}")
    flag = head.removeprefix("flag ")
    if not found or ":" not in flag.partition("=")[2]:
        return None
    cause = trace.strip().splitlines()[-1]  # e.g. "ValueError: unknown config argument 'x'; ..."
    return f"{flag}: {cause.partition(': ')[2] or cause}"


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
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


def check_config_file(holder: flags.FlagHolder) -> None:
    """Raises UserError when the file of a `config_flags.DEFINE_config_file` flag is missing.

    ml_collections defers a load failure to the config's first use, where it
    surfaces as two tracebacks; a mistyped path deserves one line. (Errors in
    a config file's own code keep their traceback: it points at the line.)
    """
    # The flag's value is PATH[:ARG], split at the first colon as ml_collections does.
    path = config_flags.get_config_filename(flags.FLAGS[holder.name]).split(":", 1)[0]
    if not os.path.isfile(path):
        raise UserError(
            f"--{holder.name}={path}: no such file; pass a recipe such as "
            "configs/gecko_minilm.py, optionally with :ARG"
        )


def progress_printer(tool: str) -> Callable[[str], None]:
    """A `progress` callback printing `TOOL: LINE` to stderr, keeping stdout for results."""

    def progress(line: str) -> None:
        print(f"{tool}: {line}", file=sys.stderr, flush=True)

    return progress


# Big enough for the compiled steps of several recipes and their batch shapes;
# the least recently used programs are evicted beyond it.
_CACHE_MAX_BYTES = 4 << 30


def use_compilation_cache() -> None:
    """Keeps compiled XLA programs on disk, so a rerun skips compiling them.

    Resuming a run, the next point of a sweep, an evaluation of the same model
    and every batch shape of `data.bucket_lengths` then load their programs
    instead of compiling them again (about 10 s each for the MiniLM train step
    on a 2-core CPU). JAX's own variables take precedence:
    JAX_COMPILATION_CACHE_DIR picks another folder (a gs:// path works), and
    JAX_ENABLE_COMPILATION_CACHE=false turns the cache off.
    """
    import jax  # pylint: disable=g-import-not-at-top

    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        jax.config.update("jax_compilation_cache_dir", os.path.join(cache_home, "gecko_jax", "jax"))
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
        jax.config.update("jax_compilation_cache_max_size", _CACHE_MAX_BYTES)


def run(
    main: Callable[[list[str]], None], flags_parser: Optional[Callable[[list[str]], list[str]]] = None
) -> None:
    """`absl.app.run(main)`, turning a `UserError` into one line and exit code 2.

    Args:
      main: the program.
      flags_parser: parses argv and returns what `main` receives; the default
        rejects unknown flags (with a one-line message for `--config.`).
    """

    def guarded(argv):
        use_compilation_cache()
        try:
            main(argv)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)

    app.run(guarded, flags_parser=flags_parser or _parse_flags)
