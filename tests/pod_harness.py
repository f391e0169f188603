"""Runs `launch/train.py` as several processes joined on 127.0.0.1, as on a pod slice.

Each process simulates some CPU devices and joins the others through
`jax.distributed` (the `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and
`JAX_PROCESS_ID` variables a user would set), so N processes of M devices form
one job of N*M devices over gloo collectives, like N hosts of a pod. A job gets
a free port, keeps every process's output in a file for the failure message,
and kills whatever is left when it times out or the test fails.
"""

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN = REPO / "launch" / "train.py"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TrainJob:
    """`launch/train.py ARGS` as `num_processes` processes of `devices_per_process` devices.

    Use as a context manager: leaving it kills the processes still running.
    """

    def __init__(
        self,
        args,
        log_dir: pathlib.Path,
        num_processes: int = 2,
        devices_per_process: int = 2,
        script: pathlib.Path = TRAIN,
    ):
        self.log_dir = pathlib.Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.num_processes = num_processes
        port = free_port()
        self._procs = []
        for index in range(num_processes):
            env = dict(
                os.environ,
                JAX_PLATFORMS="cpu",
                TF_CPP_MIN_LOG_LEVEL="3",
                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}",
            )
            for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
                env.pop(name, None)
            if num_processes > 1:
                env.update(
                    JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                    JAX_NUM_PROCESSES=str(num_processes),
                    JAX_PROCESS_ID=str(index),
                )
            with open(self._log(index), "w") as log:
                self._procs.append(
                    subprocess.Popen(
                        [sys.executable, str(script), *map(str, args)],
                        cwd=REPO,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def __enter__(self) -> "TrainJob":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    def _log(self, index: int) -> pathlib.Path:
        return self.log_dir / f"process_{index}.log"

    def output(self, index: int) -> str:
        return self._log(index).read_text(errors="replace")

    def outputs(self) -> str:
        """Every process's output, labelled, for an assertion message."""
        return "\n".join(
            f"----- process {i} -----\n{self.output(i)[-6000:]}" for i in range(self.num_processes)
        )

    def send_signal(self, index: int, signum: int) -> None:
        self._procs[index].send_signal(signum)

    def kill(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def wait_for_output(self, index: int, pattern: str, timeout: float) -> None:
        """Waits until process `index` prints a line matching `pattern`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.output(index), re.MULTILINE):
                return
            if self._procs[index].poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"process {index} never printed {pattern!r}\n{self.outputs()}")

    def wait(self, timeout: float) -> list[int]:
        """The exit statuses; kills every process and fails if one is still running after `timeout`."""
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"still running after {timeout:.0f} s; killed\n{self.outputs()}"
                ) from None
        return [proc.returncode for proc in self._procs]

    def check(self, timeout: float, status: int = 0) -> None:
        """Waits, and fails with every output unless each process exits with `status`."""
        statuses = self.wait(timeout)
        if any(code != status for code in statuses):
            raise AssertionError(f"exit statuses {statuses}, expected {status}\n{self.outputs()}")


def train(
    args, log_dir: pathlib.Path, num_processes: int = 2, devices_per_process: int = 2, timeout: float = 600
) -> TrainJob:
    """Runs a job to the end and checks that every process exits 0."""
    with TrainJob(args, log_dir, num_processes, devices_per_process) as job:
        job.check(timeout)
    return job
