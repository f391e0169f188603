"""Compiling the train step for a Cloud TPU slice from a host that has none.

libtpu (`pip install -e .[tpu-aot]`) can describe a slice it is not running
on: `jax.experimental.topologies` turns a name such as `v5e:4x4` into
compile-only devices with the chips' real kind and coordinates. A mesh over
them compiles the very step the trainer runs (`aot.lower_train_step`), so the
memory numbers are XLA:TPU's own, not XLA:CPU's approximation, and a step too
big for a chip's HBM is refused here as the slice would refuse it. Nothing
runs on a TPU: JAX keeps its CPU backend and only libtpu's compiler is used.
"""

import dataclasses
import importlib.util
import os
import re
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from jax.experimental import mesh_utils
from jax.experimental import topologies
from jax.sharding import Mesh, SingleDeviceSharding

from gecko_jax.errors import UserError
from gecko_jax.training import aot
from gecko_jax.training import mfu
from gecko_jax.training import sharding

_GIB = 1024**3
ACCEPTED_FORMS = "v4:AxBxC, v5p:AxBxC, v5e:AxB or v6e:AxB, chips along each axis (e.g. v5e:4x4, v4:2x2x4)"

# Set (unless already set) before libtpu loads. The lock file libtpu takes
# keeps two processes off the same chips; a compile-only process opens no
# chips, and without this it would fail whenever any other process of the
# virtualenv (a training run, a test) has libtpu loaded. A worker hostname
# stops libtpu logging an error about a TPU VM it is not on.
_LIBTPU_ENV = {"ALLOW_MULTIPLE_LIBTPU_LOAD": "1", "TPU_WORKER_HOSTNAMES": "localhost"}
# Cloud TPU hosts of these generations hold a 2x2 block of chips.
_HOST_BOUNDS = (2, 2, 1)


class _Generation(NamedTuple):
    """How libtpu names a TPU generation, and a chip's usable HBM.

    chip_config "megacore" makes a chip's two TensorCores one JAX device, as
    the runtime does on v4 and v5p. hbm_bytes is what libtpu 0.0.42's compiler
    reports (a little under the spec sheet's 32, 16, 95 and 32 GiB), used only
    when the compiler cannot be asked.
    """

    libtpu_name: str  # v5p is "v5" to libtpu.
    num_dims: int  # of the interconnect torus.
    chip_config: str
    hbm_bytes: int


_GENERATIONS = {
    "v4": _Generation("v4", 3, "megacore", int(30.75 * _GIB)),
    "v5e": _Generation("v5e", 2, "default", int(15.75 * _GIB)),
    "v5p": _Generation("v5", 3, "megacore", int(95.74 * _GIB)),
    "v6e": _Generation("v6e", 2, "default", int(31.25 * _GIB)),
}


@dataclasses.dataclass(frozen=True)
class Topology:
    """A single TPU slice: a generation and its chips along each axis."""

    generation: str
    dims: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.generation}:{'x'.join(map(str, self.dims))}"

    def libtpu_kwargs(self) -> dict:
        """`get_topology_desc` arguments, as Cloud TPU lays such a slice out."""
        gen = _GENERATIONS[self.generation]
        dims3 = self.dims + (1,) * (3 - len(self.dims))
        if gen.num_dims == 2:
            # Only an axis spanning a whole 16x16 pod has wraparound links...
            wrap = tuple(d == 16 for d in dims3[:2]) + (False,)
        else:
            # ...and in 3-D, only slices built of whole 4x4x4 cubes.
            wrap = (all(d % 4 == 0 for d in dims3),) * 3
        return dict(
            topology_name=f"{gen.libtpu_name}:{'x'.join(map(str, self.dims))}",
            platform="tpu",
            chip_config_name=gen.chip_config,
            num_slices=1,
            wrap=wrap,
            chips_per_host_bounds=tuple(min(d, h) for d, h in zip(dims3, _HOST_BOUNDS)),
        )


def parse_topology(name: str) -> Topology:
    """Reads a name such as `v5e:4x4`.

    Raises:
      UserError: the name is not one of ACCEPTED_FORMS.
    """
    match = re.fullmatch(r"(v\d+[a-z]*):(\d+(?:x\d+)*)", name.strip().lower())
    generation = _GENERATIONS.get(match.group(1)) if match else None
    dims = tuple(int(d) for d in match.group(2).split("x")) if match else ()
    if generation is None or len(dims) != generation.num_dims or min(dims) < 1:
        raise UserError(f"unknown TPU topology {name!r}; use {ACCEPTED_FORMS}")
    return Topology(match.group(1), dims)


def check_libtpu() -> None:
    """Raises UserError when libtpu, which the TPU compiler ships in, is not installed."""
    if not os.environ.get("TPU_LIBRARY_PATH") and importlib.util.find_spec("libtpu") is None:
        raise UserError("compiling for a TPU topology needs libtpu: pip install -e .[tpu-aot]")


def topology_devices(topology: Topology) -> list:
    """The compile-only devices of `topology`, one per chip.

    Raises:
      UserError: libtpu is missing or refuses the layout (e.g. v5e:3x3).
    """
    check_libtpu()
    for var, value in _LIBTPU_ENV.items():
        os.environ.setdefault(var, value)
    try:
        return list(topologies.get_topology_desc(**topology.libtpu_kwargs()).devices)
    except jax.errors.JaxRuntimeError as err:
        raise UserError(f"libtpu refused the topology {topology.name}: {str(err).splitlines()[0]}") from err


def create_mesh(devices: list, mesh_shape) -> Mesh:
    """The (data, fsdp, tensor) mesh over `devices`, laid out as the trainer lays it.

    `sharding.create_mesh` on the slice itself lets mesh_utils put mesh
    neighbours on interconnect neighbours; the same call here gives the same
    device order, so the collectives compiled are the ones the slice runs.
    """
    shape = sharding.resolve_mesh_shape(dict(mesh_shape), len(devices))
    grid = mesh_utils.create_device_mesh(
        [shape[axis] for axis in sharding.MESH_AXES], devices=devices, allow_split_physical_axes=True
    )
    return Mesh(grid, sharding.MESH_AXES)


_SIZE = r"([\d.]+)\s*([KMGTP]?)i?B?"  # XLA's sizes: binary units, "15.75G".
# The two ways XLA:TPU words "does not fit": (required, capacity) per chip.
_OOM_PATTERNS = (
    re.compile(rf"HLO temporaries \({_SIZE}\) exceeds available HBM \({_SIZE}\)"),
    re.compile(rf"Used {_SIZE} of {_SIZE} hbm"),
)


def parse_oom(message: str) -> tuple[int, int] | None:
    """(required, capacity) bytes per chip from XLA:TPU's out-of-memory error; None if not one.

    Despite its wording, the "HLO temporaries" figure counts the arguments
    too (as programs with known argument and temporary sizes show), so it is
    comparable with a compiled step's peak.
    """
    for pattern in _OOM_PATTERNS:
        found = pattern.search(message)
        if found:
            num = [float(found.group(i)) * 1024 ** " KMGTP".index(found.group(i + 1) or " ") for i in (1, 3)]
            return int(num[0]), int(num[1])
    return None


def hbm_capacity(devices: list, generation: str) -> tuple[int, str]:
    """A chip's usable HBM in bytes, and who said so.

    Compile-only devices have no `memory_stats()` ("only supported for
    addressable PjRt devices") nor any capacity attribute, so the compiler is
    asked: it must refuse a program with a 1 TiB argument (about 0.1 s), and
    its refusal names the capacity the real compile is checked against. The
    table is the last resort.
    """
    probe = jax.ShapeDtypeStruct((1 << 40,), jnp.int8, sharding=SingleDeviceSharding(devices[0]))
    try:
        jax.jit(lambda x: x).lower(probe).compile()
    except jax.errors.JaxRuntimeError as err:
        oom = parse_oom(str(err))
        if oom:
            return oom[1], "libtpu's compiler"
    return _GENERATIONS[generation].hbm_bytes, "gecko_jax's table"


@dataclasses.dataclass(frozen=True)
class TopologyReport:
    """One train step compiled (or refused) for a TPU slice; memory is per chip.

    Attributes:
      topology, device_kind, num_chips, num_hosts: the slice ("v5e:4x4",
        "TPU v5 lite", 16, 4).
      hbm_bytes: usable HBM per chip, as hbm_source ("libtpu's compiler" or
        "gecko_jax's table") reports it.
      peak_bytes: what the step needs per chip: `compile.peak_bytes`, or the
        compiler's figure when it refused the step (then `compile` is None
        and `refusal` its out-of-memory message).
      mesh_shape, num_params, state_bytes, compile_seconds: as in CompileReport.
      estimated_seconds: XLA:TPU's cost-model step time ("optimal_seconds"),
        or None where it gives none (a negative value).
      chip_peak_flops: the spec sheet's dense bf16 FLOP/s of one chip, or None.
    """

    topology: str
    device_kind: str
    num_chips: int
    num_hosts: int
    hbm_bytes: int
    hbm_source: str
    peak_bytes: int
    compile: aot.CompileReport | None
    mesh_shape: dict
    num_params: int
    state_bytes: int
    compile_seconds: float
    refusal: str | None
    estimated_seconds: float | None
    chip_peak_flops: float | None

    @property
    def fits(self) -> bool:
        return self.compile is not None and self.peak_bytes <= self.hbm_bytes


def compile_for_topology(config: ml_collections.ConfigDict, name: str) -> TopologyReport:
    """Lowers and compiles the trainer's step of `config` for the TPU slice `name`.

    The mesh is `config.mesh_shape` with its -1 axis resolved against the chips.
    JAX's persistent compilation cache goes off for the process: a compile-only
    client cannot load the entries it writes ("PjRtCompiler must be constructed
    with a Client"), so they would only cost disk and a warning per rerun.

    Raises:
      UserError: a bad name, no libtpu, or a config that does not fit the mesh.
      jax.errors.JaxRuntimeError: the compiler failed other than for memory.
    """
    topology = parse_topology(name)
    jax.config.update("jax_enable_compilation_cache", False)
    devices = topology_devices(topology)
    mesh = create_mesh(devices, config.mesh_shape)
    hbm, hbm_source = hbm_capacity(devices, topology.generation)
    start = time.perf_counter()
    program, lowered = aot.lower_train_step(config, mesh)
    compiled, refusal, peak, estimate = None, None, 0, None
    try:
        compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as err:
        oom = parse_oom(str(err))
        if oom is None:
            raise
        refusal = str(err).splitlines()[0]
        (peak, hbm), hbm_source = oom, "libtpu's compiler"
    seconds = time.perf_counter() - start
    report = None
    if compiled is not None:
        report = aot.report_of_compiled(config, program, compiled, mesh, seconds)
        peak = report.peak_bytes
        estimate = aot.cost_of(compiled).get("optimal_seconds")
    return TopologyReport(
        topology=topology.name,
        device_kind=devices[0].device_kind,
        num_chips=len(devices),
        num_hosts=len({d.process_index for d in devices}),
        hbm_bytes=hbm,
        hbm_source=hbm_source,
        peak_bytes=peak,
        compile=report,
        mesh_shape=dict(mesh.shape),
        num_params=aot.num_params(program),
        state_bytes=aot.state_bytes_per_device(program),
        compile_seconds=seconds,
        refusal=refusal,
        estimated_seconds=float(estimate) if estimate and estimate > 0 else None,
        chip_peak_flops=mfu.device_peak_flops(devices[0].device_kind),
    )


def format_report(report: TopologyReport) -> str:
    """The lines `launch/compile.py --topology` prints; `per-chip peak:` is parsed by tools."""
    if report.compile is not None:
        lines = [aot.format_report(report.compile)]
    else:
        mesh = ", ".join(f"{axis}={size}" for axis, size in report.mesh_shape.items())
        lines = [
            f"mesh: {mesh} ({report.num_chips} devices); refused by the compiler after "
            f"{report.compile_seconds:.1f} s",
            f"parameters: {report.num_params:,}",
            "memory per device:",
            f"  params + optimizer state  {aot.format_bytes(report.state_bytes):>12}",
        ]
    peak, hbm = report.peak_bytes / _GIB, report.hbm_bytes / _GIB
    lines += [
        f"topology: {report.topology}, {report.num_chips} chips of {report.device_kind} on "
        f"{report.num_hosts} host(s); HBM per chip as {report.hbm_source} reports it",
        f"per-chip peak: {peak:.2f} GiB of {hbm:.2f} GiB HBM",
    ]
    why = f" (XLA:TPU: {report.refusal})" if report.refusal else ""
    lines.append(
        f"verdict: fits, {hbm - peak:.2f} GiB to spare per chip"
        if report.fits
        else f"verdict: does not fit, {peak - hbm:.2f} GiB over per chip{why}"
    )
    if report.compile is None:
        lines.append("FLOPs per device and step: unknown (the compiler refused the step)")
        return "\n".join(lines)
    if report.estimated_seconds is None:
        lines.append(
            "compiler's estimated step time: none (XLA:TPU's cost model gave no estimate for this program)"
        )
    else:
        implied = ""
        if report.chip_peak_flops:
            share = report.compile.model_flops_per_device / report.estimated_seconds / report.chip_peak_flops
            implied = (
                f"; implied MFU {100 * share:.1f}% of the "
                f"{report.chip_peak_flops / 1e12:.0f} TFLOP/s bf16 peak per chip"
            )
        lines.append(
            f"compiler's estimated step time: {report.estimated_seconds:.4g} s "
            f"(XLA:TPU's cost model, not a measurement){implied}"
        )
    return "\n".join(lines)
