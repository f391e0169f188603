"""When `launch/train.py` joins a multi-host job (`training.distributed`)."""

import os
import socket
import subprocess
import sys

import jax
import pytest

from gecko_jax.training import distributed


@pytest.mark.parametrize(
    "environ,on_tpu_vm,expected",
    [
        ({}, False, None),
        ({"TPU_WORKER_HOSTNAMES": "t1"}, False, None),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, False, None),
        ({}, True, "Cloud TPU VM"),
        ({"TPU_WORKER_HOSTNAMES": "t1,t2"}, False, "TPU_WORKER_HOSTNAMES lists several hosts"),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, False, "SLURM job with 4 tasks"),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234"}, False, "JAX_COORDINATOR_ADDRESS is set"),
    ],
)
def test_multihost_reason(environ, on_tpu_vm, expected):
    assert distributed.multihost_reason(environ, on_tpu_vm) == expected


def test_initialize_joins_only_when_there_is_a_reason(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    assert not distributed.initialize({}, on_tpu_vm=lambda: False)
    assert not calls
    assert distributed.initialize(
        {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"},
        on_tpu_vm=lambda: False,
    )
    assert calls == [{"num_processes": 2, "process_id": 1}]
    assert distributed.initialize({}, on_tpu_vm=lambda: True)
    assert calls[-1] == {"num_processes": None, "process_id": None}


def _pci_devices(root, vendors):
    """A stand-in for /sys/bus/pci/devices: one folder per device, holding its `vendor`."""
    for index, vendor in enumerate(vendors):
        device = root / f"0000:00:{index:02x}.0"
        device.mkdir(parents=True)
        if vendor is not None:
            (device / "vendor").write_text(vendor + "\n")
    return str(root)


@pytest.mark.parametrize(
    "vendors,expected",
    [
        ([], False),
        (["0x8086", "0x10de"], False),  # Intel and NVIDIA devices: a GPU machine.
        (["0x8086", "0x1ae0"], True),  # A Google device among others: a TPU VM host.
        ([None, "0x1ae0"], True),  # A device without a vendor file is skipped.
    ],
)
def test_tpu_chips_are_found_by_the_google_pci_vendor(tmp_path, vendors, expected):
    assert distributed.tpu_chips_present(_pci_devices(tmp_path, vendors)) is expected


def test_an_unreadable_vendor_file_is_skipped(tmp_path):
    root = _pci_devices(tmp_path, ["0x1ae0"])
    vendor = tmp_path / "0000:00:01.0" / "vendor"
    vendor.mkdir(parents=True)  # Opening a folder raises an OSError, as a denied file does.
    assert distributed.tpu_chips_present(root) is True
    (tmp_path / "0000:00:00.0" / "vendor").unlink()
    assert distributed.tpu_chips_present(root) is False


_CHILD = """
import jax
from gecko_jax.training import distributed
assert distributed.initialize(on_tpu_vm=lambda: False)
print("process", jax.process_index(), "of", jax.process_count(), "sees", jax.device_count())
"""


def test_two_processes_join_through_a_coordinator():
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    children = []
    for index in range(2):
        env = dict(
            os.environ,
            JAX_PLATFORMS="cpu",
            JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(index),
            XLA_FLAGS="--xla_force_host_platform_device_count=2",
        )
        children.append(
            subprocess.Popen(
                [sys.executable, "-c", _CHILD],
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    outputs = [child.communicate(timeout=300) for child in children]
    for index, (child, (out, err)) in enumerate(zip(children, outputs)):
        assert child.returncode == 0, err[-2000:]
        assert f"process {index} of 2 sees 4" in out
    assert "Joined 2 processes (JAX_COORDINATOR_ADDRESS is set); 4 devices in all" in outputs[0][0]
    assert "Joined" not in outputs[1][0]  # Only process 0 prints.
