"""The gcloud commands that create a Cloud TPU VM slice, set it up, run and watch a job.

Every function returns the commands as argv lists, so the `launch/tpu/`
scripts can print them (`--dry-run`) or run them, and tests can read them.
A slice has several hosts ("workers"); `--worker=all` runs a command on each,
which is how a multi-host job starts: the same `launch/train.py` command on
every host, which then finds the others through `jax.distributed`.
"""

import argparse
import dataclasses
import shlex
import subprocess
import sys
from typing import Callable, Optional, Sequence

from gecko_jax.errors import UserError

REMOTE_DIR = "gecko_jax"  # The checkout on each worker, relative to the home folder.
REMOTE_VENV = f"{REMOTE_DIR}/.venv"
LOG_DIR = f"{REMOTE_DIR}/logs"
ARCHIVE = "/tmp/gecko_jax_src.tar.gz"
# What a worker needs of a local checkout; outputs and environments stay behind.
ARCHIVE_EXCLUDES = (".git", ".venv", "runs", "__pycache__", "*.pyc", ".pytest_cache")


@dataclasses.dataclass(frozen=True)
class Slice:
    """Where a TPU VM slice lives.

    Attributes:
      name: the TPU VM name.
      zone: its zone ('' = gcloud's configured default).
      project: its project ('' = gcloud's configured default).
    """

    name: str
    zone: str = ""
    project: str = ""

    def location_flags(self) -> list[str]:
        flags = []
        if self.zone:
            flags.append(f"--zone={self.zone}")
        if self.project:
            flags.append(f"--project={self.project}")
        return flags


def _tpu_vm(tpu: Slice, verb: str, *args: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", verb, *args, *tpu.location_flags()]


def _ssh(tpu: Slice, command: str, worker: str = "all") -> list[str]:
    return _tpu_vm(tpu, "ssh", tpu.name, f"--worker={worker}", f"--command={command}")


def create_commands(tpu: Slice, accelerator_type: str, version: str, spot: bool = False) -> list[list[str]]:
    """Creates the slice (e.g. accelerator 'v5litepod-16': 16 chips on 4 hosts)."""
    command = _tpu_vm(
        tpu, "create", tpu.name, f"--accelerator-type={accelerator_type}", f"--version={version}"
    )
    if spot:
        command.append("--spot")
    return [command]


def install_commands(tpu: Slice, source: str = ".", repo: str = "", ref: str = "main") -> list[list[str]]:
    """Puts the project on every worker and installs it with JAX for TPU.

    Args:
      tpu: the slice.
      source: a local checkout to copy (used when `repo` is empty).
      repo: a git URL every worker clones instead.
      ref: the branch, tag or commit of `repo`.

    Returns:
      The commands, in order.
    """
    commands = []
    if repo:
        fetch = (
            f"(test -d {REMOTE_DIR} || git clone {shlex.quote(repo)} {REMOTE_DIR}) && "
            f"cd {REMOTE_DIR} && git fetch origin && git checkout {shlex.quote(ref)} && cd ~"
        )
    else:
        excludes = [f"--exclude={pattern}" for pattern in ARCHIVE_EXCLUDES]
        commands.append(["tar", "czf", ARCHIVE, *excludes, "-C", source, "."])
        commands.append(_tpu_vm(tpu, "scp", ARCHIVE, f"{tpu.name}:{ARCHIVE}", "--worker=all"))
        fetch = f"mkdir -p {REMOTE_DIR} && tar xzf {ARCHIVE} -C {REMOTE_DIR}"
    commands.append(
        _ssh(
            tpu,
            " && ".join(
                [
                    fetch,
                    f"python3 -m venv {REMOTE_VENV}",
                    f"{REMOTE_VENV}/bin/pip install -q -e {REMOTE_DIR}",
                    f"{REMOTE_VENV}/bin/pip install -q 'jax[tpu]==0.10.2'",
                ]
            ),
        )
    )
    return commands


def _log_file(run_name: str) -> str:
    return f"{LOG_DIR}/{run_name}.log"


def run_commands(tpu: Slice, train_args: Sequence[str], run_name: str) -> list[list[str]]:
    """Starts `launch/train.py` with `train_args` on every worker, in the background.

    Each worker logs to ~/gecko_jax/logs/RUN_NAME.log; the job survives the
    ssh session, and `logs_commands` follows it.
    """
    if not any(arg.startswith("--config=") for arg in train_args):
        raise UserError(
            "give the training flags after --, at least --config=... and --workdir=gs://BUCKET/DIR"
        )
    if not any(arg.startswith("--workdir=gs://") for arg in train_args):
        raise UserError(
            "a multi-host run needs a --workdir all hosts share, such as --workdir=gs://BUCKET/DIR"
        )
    train = shlex.join([".venv/bin/python", "launch/train.py", *train_args])
    log = f"logs/{run_name}.log"
    return [_ssh(tpu, f"cd {REMOTE_DIR} && mkdir -p logs && nohup {train} > {log} 2>&1 < /dev/null &")]


def logs_commands(
    tpu: Slice, run_name: str, worker: str = "0", lines: int = 50, follow: bool = False
) -> list[list[str]]:
    """Shows the end of one worker's log (process 0 prints the progress lines)."""
    tail = ["tail", f"-n{lines}"] + (["-f"] if follow else []) + [_log_file(run_name)]
    return [_ssh(tpu, shlex.join(tail), worker=worker)]


def delete_commands(tpu: Slice) -> list[list[str]]:
    """Deletes the slice without asking."""
    return [_tpu_vm(tpu, "delete", tpu.name, "--quiet")]


def execute(commands: list[list[str]], dry_run: bool) -> None:
    """Prints each command; unless `dry_run`, runs it and stops at the first failure."""
    for command in commands:
        print(shlex.join(command), flush=True)
        if dry_run:
            continue
        try:
            returncode = subprocess.run(command, check=False).returncode
        except FileNotFoundError as err:
            raise UserError(
                f"{command[0]} is not installed; install the Google Cloud CLI "
                "or use --dry-run to see the commands"
            ) from err
        if returncode:
            raise UserError(f"{command[0]} exited with status {returncode}; see its message above")


def slice_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the flags every `launch/tpu/` script takes."""
    parser.add_argument("--name", required=True, help="TPU VM name.")
    parser.add_argument("--zone", default="", help="Zone (default: gcloud's).")
    parser.add_argument("--project", default="", help="Project (default: gcloud's).")
    parser.add_argument("--dry-run", action="store_true", help="Print the commands instead of running them.")


def main(
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    build: Callable[[Slice, argparse.Namespace], list[list[str]]],
    argv: Optional[list[str]] = None,
) -> None:
    """The body of a `launch/tpu/` script: parse, build the commands, print or run them.

    Args:
      description: the script's help text.
      add_arguments: adds the script's own flags.
      build: maps the slice and the parsed flags to the commands.
      argv: the arguments (default: sys.argv[1:]).
    """
    parser = argparse.ArgumentParser(description=description)
    slice_arguments(parser)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        execute(build(Slice(args.name, args.zone, args.project), args), args.dry_run)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
