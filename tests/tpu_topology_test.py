"""Compiling the train step for a TPU slice (`training.tpu_topology`, `compile.py --topology`)."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from gecko_jax.errors import UserError
from gecko_jax.training import aot
from gecko_jax.training import tpu_topology

REPO = pathlib.Path(__file__).resolve().parents[1]
GIB = 1024**3


@pytest.mark.parametrize(
    "name, generation, dims",
    [
        ("v5e:4x4", "v5e", (4, 4)),
        ("v5e:2x2", "v5e", (2, 2)),
        ("V6E:16x16", "v6e", (16, 16)),
        ("v4:2x2x4", "v4", (2, 2, 4)),
        ("v5p:2x2x4", "v5p", (2, 2, 4)),
    ],
)
def test_parse_topology(name, generation, dims):
    topology = tpu_topology.parse_topology(name)
    assert (topology.generation, topology.dims) == (generation, dims)


@pytest.mark.parametrize("name", ["v5e:4x4x4", "v4:2x2", "v7x:2x2x1", "v5e-16", "v5e:0x4", "tpu", ""])
def test_parse_topology_refuses_unknown_names(name):
    with pytest.raises(
        UserError,
        match=r"unknown TPU topology .*; use v4:AxBxC, v5p:AxBxC, "
        r"v5e:AxB or v6e:AxB",
    ):
        tpu_topology.parse_topology(name)


def test_libtpu_arguments_follow_cloud_tpu_layouts():
    small = tpu_topology.parse_topology("v5e:2x2").libtpu_kwargs()
    assert small == dict(
        topology_name="v5e:2x2",
        platform="tpu",
        chip_config_name="default",
        num_slices=1,
        wrap=(False, False, False),
        chips_per_host_bounds=(2, 2, 1),
    )
    # A whole v5e pod wraps around; v5p is "v5" to libtpu, one megacore device per chip.
    assert tpu_topology.parse_topology("v5e:16x16").libtpu_kwargs()["wrap"] == (True, True, False)
    v5p = tpu_topology.parse_topology("v5p:4x4x8").libtpu_kwargs()
    assert (v5p["topology_name"], v5p["chip_config_name"], v5p["wrap"]) == (
        "v5:4x4x8",
        "megacore",
        (True, True, True),
    )
    assert tpu_topology.parse_topology("v4:2x2x4").libtpu_kwargs()["wrap"] == (False,) * 3
    # A host never holds more chips than the slice has.
    assert tpu_topology.parse_topology("v6e:1x1").libtpu_kwargs()["chips_per_host_bounds"] == (1, 1, 1)


def test_parse_oom_reads_both_wordings_of_xla_tpu():
    assert tpu_topology.parse_oom(
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
        "temporaries (22.50G) exceeds available HBM (15.75G)."
    ) == (int(22.5 * GIB), int(15.75 * GIB))
    assert tpu_topology.parse_oom(
        "RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space "
        "hbm. Used 40.13G of 31.25G hbm. Exceeded hbm capacity by 8.88G."
    ) == (int(40.13 * GIB), int(31.25 * GIB))
    assert tpu_topology.parse_oom("INVALID_ARGUMENT: something else") is None


def _report(**changes):
    compiled = aot.CompileReport(
        mesh_shape={"data": 1, "fsdp": 16, "tensor": 1},
        num_params=10**9,
        state_bytes=GIB,
        argument_bytes=GIB,
        output_bytes=0,
        temp_bytes=int(13.2 * GIB),
        peak_bytes=int(14.2 * GIB),
        model_flops_per_device=1e14,
        flops_per_device=1.3e14,
        loops=False,
        compile_seconds=300.0,
    )
    fields = dict(
        topology="v5e:4x4",
        device_kind="TPU v5 lite",
        num_chips=16,
        num_hosts=4,
        hbm_bytes=int(15.75 * GIB),
        hbm_source="libtpu's compiler",
        peak_bytes=compiled.peak_bytes,
        compile=compiled,
        mesh_shape=compiled.mesh_shape,
        num_params=compiled.num_params,
        state_bytes=compiled.state_bytes,
        compile_seconds=300.0,
        refusal=None,
        estimated_seconds=1.0,
        chip_peak_flops=197e12,
    )
    fields.update(changes)
    return tpu_topology.TopologyReport(**fields)


def test_report_lines():
    lines = tpu_topology.format_report(_report()).splitlines()
    assert "per-chip peak: 14.20 GiB of 15.75 GiB HBM" in lines
    assert "verdict: fits, 1.55 GiB to spare per chip" in lines
    assert lines[-1] == (
        "compiler's estimated step time: 1 s (XLA:TPU's cost model, not a "
        "measurement); implied MFU 50.8% of the 197 TFLOP/s bf16 peak per chip"
    )
    over = tpu_topology.format_report(
        _report(peak_bytes=int(17.1 * GIB), compile=None, refusal="RESOURCE_EXHAUSTED: ...")
    )
    assert "per-chip peak: 17.10 GiB of 15.75 GiB HBM" in over.splitlines()
    assert (
        "verdict: does not fit, 1.35 GiB over per chip (XLA:TPU: RESOURCE_EXHAUSTED: ...)"
        in over.splitlines()
    )


def test_missing_libtpu_names_the_extra(monkeypatch):
    monkeypatch.delenv("TPU_LIBRARY_PATH", raising=False)
    monkeypatch.setattr(tpu_topology.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=re.escape("needs libtpu: pip install -e .[tpu-aot]")):
        tpu_topology.check_libtpu()


def _compile_cli(*args):
    env = dict(os.environ, XLA_FLAGS="")
    return subprocess.run(
        [sys.executable, str(REPO / "launch" / "compile.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_cli_refuses_mesh_with_topology():
    result = _compile_cli(
        f"--config={REPO}/configs/gecko_768.py:runlocal", "--mesh=1,4,1", "--topology=v5e:2x2"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --mesh and --topology exclude each other: --mesh simulates CPU devices, "
        "--topology compiles for a TPU slice"
    )


def test_cli_compiles_for_a_tpu_slice():
    pytest.importorskip("libtpu")
    # 4 chips; batch 8 splits over fsdp=4. About 20 s on a 2-core CPU.
    result = _compile_cli(
        f"--config={REPO}/configs/gecko_768.py:runlocal",
        "--topology=v5e:2x2",
        "--config.mesh_shape.data=1",
        "--config.mesh_shape.fsdp=-1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "mesh: data=1, fsdp=4, tensor=1 (4 devices)" in out
    assert "topology: v5e:2x2, 4 chips of TPU v5 lite" in out
    found = re.search(r"^per-chip peak: (\d+\.\d\d) GiB of (\d+\.\d\d) GiB HBM$", out, re.M)
    assert found, out
    peak, hbm = map(float, found.groups())
    # The tiny tower needs some MiB; a v5e chip offers 16 GB less libtpu's reserve.
    assert 0 < peak < 1 and hbm == 15.75
    assert re.search(r"^verdict: fits, 15\.\d\d GiB to spare per chip$", out, re.M), out
    flops = re.search(r"^FLOPs per device and step: (\S+) model FLOPs .*XLA's count (\S+)", out, re.M)
    model, xla = float(flops.group(1)), float(flops.group(2))
    # The scanned layers loop, and XLA counts their body once: a lower bound, labelled so.
    assert model > 1e8 and 0 < xla < model
    assert "(a lower bound: the program loops" in out, out


def test_cli_reports_a_step_too_big_for_the_chips():
    pytest.importorskip("libtpu")
    # The in-batch similarity matrices grow with the batch squared; at this batch
    # XLA:TPU refuses the step early (about 15 s in all on a 2-core CPU; a batch
    # nearer the limit compiles for minutes), and the report says by how much.
    result = _compile_cli(
        f"--config={REPO}/configs/gecko_768.py:runlocal",
        "--topology=v5e:2x2",
        "--config.mesh_shape.data=1",
        "--config.mesh_shape.fsdp=-1",
        "--config.batch_size=262144",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    out = result.stdout
    found = re.search(r"^per-chip peak: (\d+\.\d\d) GiB of 15\.75 GiB HBM$", out, re.M)
    assert found and float(found.group(1)) > 15.75, out
    over = float(found.group(1)) - 15.75
    assert re.search(
        rf"^verdict: does not fit, {over:.2f} GiB over per chip \(XLA:TPU: "
        r"RESOURCE_EXHAUSTED: .*HBM",
        out,
        re.M,
    ), out
    assert "FLOPs per device and step: unknown (the compiler refused the step)" in out
