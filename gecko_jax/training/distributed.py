"""Joining the other hosts of a multi-host job through `jax.distributed`.

Every host of a TPU pod slice (or a SLURM job, or hosts given a coordinator by
hand) runs the same `launch/train.py`; before JAX touches a device, each one
must join the others so that `jax.devices()` lists the chips of all hosts. On
a laptop or a single GPU machine nothing needs joining, and calling
`jax.distributed.initialize()` there would fail for want of a coordinator.
"""

import glob
import os
import sys
from typing import Callable, Mapping, NoReturn, Optional

import jax

_GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips show up as PCI devices of this vendor.
# What a collective or the coordination service reports when another process
# of the job is gone (killed, crashed, its host lost).
_PEER_FAILURE_MARKERS = (
    "Gloo",
    "Connection reset",
    "Connection refused",
    "heartbeat",
    "another task",
    "task has failed",
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
)
PEER_FAILURE_EXIT_STATUS = 3


def tpu_chips_present(pci_devices: str = "/sys/bus/pci/devices") -> bool:
    """Whether this machine has Cloud TPU chips (a TPU VM host).

    Args:
      pci_devices: the folder of PCI devices, one subfolder each with a
        `vendor` file; another folder lets tests stand in for the machine's.
    """
    for path in glob.glob(os.path.join(pci_devices, "*", "vendor")):
        try:
            with open(path) as f:
                if f.read().strip() == _GOOGLE_PCI_VENDOR:
                    return True
        except OSError:
            continue
    return False


def multihost_reason(environ: Mapping[str, str], on_tpu_vm: bool) -> Optional[str]:
    """Why this process should join a multi-host job, or None when it runs alone.

    Args:
      environ: the process environment.
      on_tpu_vm: whether the machine has TPU chips; JAX then finds the slice's
        other hosts (or that there are none) from the TPU VM metadata.
    """
    if environ.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS is set"  # With JAX_NUM_PROCESSES and JAX_PROCESS_ID.
    if int(environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in environ:
        return f"SLURM job with {environ['SLURM_NTASKS']} tasks"
    if "," in environ.get("TPU_WORKER_HOSTNAMES", ""):
        return "TPU_WORKER_HOSTNAMES lists several hosts"
    if on_tpu_vm:
        return "Cloud TPU VM"
    return None


def initialize(
    environ: Optional[Mapping[str, str]] = None, on_tpu_vm: Optional[Callable[[], bool]] = None
) -> bool:
    """Calls `jax.distributed.initialize()` when this process is part of a multi-host job.

    Must run before anything asks JAX for its devices.

    Args:
      environ: the environment to read (default: os.environ).
      on_tpu_vm: detects TPU chips (default: `tpu_chips_present`).

    Returns:
      Whether it initialised.
    """
    environ = os.environ if environ is None else environ
    reason = multihost_reason(environ, (on_tpu_vm or tpu_chips_present)())
    if reason is None:
        return False
    # jax reads the coordinator from the environment but not the process
    # count and index, which a hand-made cluster gives there as well.
    count, index = environ.get("JAX_NUM_PROCESSES"), environ.get("JAX_PROCESS_ID")
    jax.distributed.initialize(
        num_processes=int(count) if count else None, process_id=int(index) if index else None
    )
    # The on-disk compilation cache can hand the processes of one job different
    # executables of the same step (one loads what an earlier run wrote, another
    # compiles afresh), whose collectives then wait on each other forever: seen
    # as a hang on the first step of a resumed FSDP run over two processes.
    jax.config.update("jax_enable_compilation_cache", False)
    if jax.process_index() == 0:
        print(
            f"Joined {jax.process_count()} processes ({reason}); {jax.device_count()} devices in all",
            flush=True,
        )
    return True


def is_peer_failure(err: BaseException) -> bool:
    """Whether `err` is a collective or coordination failure because another process died."""
    if jax.process_count() == 1 or not isinstance(err, (jax.errors.JaxRuntimeError, RuntimeError)):
        return False
    return any(marker in str(err) for marker in _PEER_FAILURE_MARKERS)


def leave_broken_job(message: str) -> NoReturn:
    """Prints `message` as one line and ends this process at once.

    A normal exit would run `jax.distributed.shutdown`, whose barrier waits for
    the dead process until the heartbeat timeout and then aborts with pages of
    C++ stack. The work done is on disk already: checkpoints are written to a
    temporary folder and renamed when complete, so an interrupted save is
    discarded on the rerun.
    """
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(PEER_FAILURE_EXIT_STATUS)  # pylint: disable=protected-access
