"""Ahead-of-time compilation of a config's train step for a target mesh.

Lowering and compiling the step against abstract inputs (no data, no weights)
on simulated devices tells, before a pod is booked, whether the shardings are
consistent and roughly how much memory each device will need. The parameter
and optimizer bytes per device follow exactly from the shardings; the
temporary (activation) bytes are the XLA:CPU compiler's accounting, which
other backends' compilers (fusing differently) only approximate. For the
TPU compiler's own numbers, `training.tpu_topology` compiles the same step for
a Cloud TPU slice described to libtpu, without the slice.
"""

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import ml_collections

from gecko_jax.data import batch_spec
from gecko_jax.errors import UserError
from gecko_jax.training import mfu
from gecko_jax.training import sharding
from gecko_jax.training.grad_cache import check_chunk_size
from gecko_jax.training.train_program import build_train_program


def format_bytes(num_bytes: int) -> str:
    """`num_bytes` in GiB, MiB or KiB, as the reports print sizes."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.2f} {unit}"
    return f"{num_bytes / 1024:.2f} KiB"


@dataclasses.dataclass(frozen=True)
class CompileReport:
    """Per-device memory and compute of one compiled train step.

    Attributes:
      mesh_shape: mesh axis -> size.
      num_params: parameters of the model.
      state_bytes: parameters and optimizer state held by one device.
      argument_bytes: all inputs of the step on one device (state and batch).
      output_bytes: outputs on one device (less those aliased to donated inputs).
      temp_bytes: temporaries (activations, gradients) on one device.
      peak_bytes: argument + output + temp bytes; what must fit on a device.
      model_flops_per_device: the model FLOPs of one step (6 x parameters x
        tokens plus attention, `training.model_flops`) with every text at its
        full length, over the devices.
      flops_per_device: XLA's FLOP count of the per-device program, which
        includes recomputation and padding.
      loops: whether the program loops (scanned layers, GradCache chunks);
        XLA counts a loop body once, so `flops_per_device` is then a lower bound.
      compile_seconds: time to lower and compile.
    """

    mesh_shape: dict
    num_params: int
    state_bytes: int
    argument_bytes: int
    output_bytes: int
    temp_bytes: int
    peak_bytes: int
    model_flops_per_device: float
    flops_per_device: float
    loops: bool
    compile_seconds: float


def abstract_batch(config: ml_collections.ConfigDict, batch_sharding) -> dict:
    """The global batch the input pipeline feeds, as sharded ShapeDtypeStructs.

    The batch of `data.batch_spec` with every field present (the largest
    program), teacher vectors included when `data.teachers` is set, without
    reading any data.
    """
    width = 0
    if config.data.get("teachers", ()):
        # Stored teacher vectors; distillation needs them as wide as the student.
        width = (
            sum(config.loss.jasper_teacher_dims) or config.model.projection_dim or config.model.hidden_size
        )
    fields = batch_spec.shapes(config.batch_size, batch_spec.text_lengths(config.data), width)
    return {
        name: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)
        for name, (shape, dtype) in fields.items()
    }


def _bytes_per_device(tree, shardings) -> int:
    total = 0
    for leaf, leaf_sharding in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
        shard = leaf_sharding.shard_shape(leaf.shape)
        total += math.prod(shard) * jnp.dtype(leaf.dtype).itemsize
    return total


def _check_batch(config: ml_collections.ConfigDict, mesh) -> None:
    dp = sharding.data_parallel_size(mesh)
    if config.batch_size % dp:
        raise UserError(
            f"batch_size={config.batch_size} is not divisible by the data-parallel "
            f"size {dp} (mesh {dict(mesh.shape)}); pick a multiple of {dp}"
        )
    if config.grad_cache.chunk_size:
        check_chunk_size(config.grad_cache.chunk_size, config.batch_size, dp)


def lower_train_step(config: ml_collections.ConfigDict, mesh):
    """The trainer's step of `config`, lowered for `mesh` against abstract inputs.

    Args:
      config: a config built on `gecko_jax.config_base.base_config()`;
        `model.init` is ignored (weights do not change the program).
      mesh: the target mesh, of simulated CPU devices or of a TPU topology.

    Returns:
      (TrainProgram, jax.stages.Lowered).

    Raises:
      UserError: the config does not fit the mesh (batch, preset, GradCache).
    """
    _check_batch(config, mesh)
    program = build_train_program(config, mesh)
    state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        program.abstract_state,
        program.shardings,
    )
    rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
    with sharding.activated(mesh, program.rules):
        lowered = program.train_step.lower(state, abstract_batch(config, program.batch_sharding), rng)
    return program, lowered


def compile_train_step(config: ml_collections.ConfigDict, mesh) -> CompileReport:
    """Lowers and compiles the trainer's step of `config` for `mesh`.

    Args:
      config: as for `lower_train_step`.
      mesh: the target mesh, usually of simulated CPU devices.

    Returns:
      The CompileReport.

    Raises:
      UserError: the config does not fit the mesh (batch, preset, GradCache).
    """
    start = time.perf_counter()
    program, lowered = lower_train_step(config, mesh)
    compiled = lowered.compile()
    return report_of_compiled(config, program, compiled, mesh, time.perf_counter() - start)


def num_params(program) -> int:
    """The parameter count of a TrainProgram's model."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(program.abstract_state.params))


def state_bytes_per_device(program) -> int:
    """Parameter and optimizer bytes one device holds, from the shardings alone.

    Needs no compiled program, so it is known even when a compiler refuses the step.
    """
    return _bytes_per_device(program.abstract_state.params, program.shardings.params) + _bytes_per_device(
        program.abstract_state.opt_state, program.shardings.opt_state
    )


def cost_of(compiled) -> dict:
    """XLA's cost analysis of `compiled` as one dict (empty when the backend gives none)."""
    cost = compiled.cost_analysis()
    # A dict in recent JAX; a list with one dict per program in older ones.
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
    return dict(cost or {})


def _model_flops_per_device(config: ml_collections.ConfigDict, program, mesh) -> float:
    lengths = batch_spec.text_lengths(config.data)
    full = sum(
        program.flops.of_texts(jnp.ones((config.batch_size, lengths[field]), jnp.int32))
        for field in batch_spec.TEXT_FIELDS
    )
    return float(full) / mesh.size


def report_of_compiled(
    config: ml_collections.ConfigDict, program, compiled, mesh, seconds: float
) -> CompileReport:
    """The CompileReport of a train step `compiled` for `mesh` in `seconds`.

    Args:
      config: the config the step was lowered from.
      program: the TrainProgram that `lower_train_step` returned.
      compiled: its `jax.stages.Compiled` step, for CPU or TPU devices.
      mesh: the mesh it was compiled for.
      seconds: the time lowering and compiling took.
    """
    memory = compiled.memory_analysis()
    output = memory.output_size_in_bytes - memory.alias_size_in_bytes
    return CompileReport(
        mesh_shape=dict(mesh.shape),
        num_params=num_params(program),
        state_bytes=state_bytes_per_device(program),
        argument_bytes=memory.argument_size_in_bytes,
        output_bytes=output,
        temp_bytes=memory.temp_size_in_bytes,
        peak_bytes=memory.argument_size_in_bytes + output + memory.temp_size_in_bytes,
        model_flops_per_device=_model_flops_per_device(config, program, mesh),
        flops_per_device=float(cost_of(compiled).get("flops", 0.0)),
        loops=mfu.has_loop(compiled),
        compile_seconds=seconds,
    )


def format_flops(report: CompileReport) -> str:
    """The report's FLOPs line: the model's count, then XLA's."""
    xla = f"XLA's count {report.flops_per_device:.4g}"
    if report.loops:
        xla += " (a lower bound: the program loops and XLA counts a loop body once)"
    return (
        f"FLOPs per device and step: {report.model_flops_per_device:.4g} model FLOPs "
        f"(6 x parameters x tokens + attention, every text at full length); {xla}"
    )


def format_report(report: CompileReport) -> str:
    """The report as the lines `launch/compile.py` prints."""
    devices = math.prod(report.mesh_shape.values())
    mesh = ", ".join(f"{axis}={size}" for axis, size in report.mesh_shape.items())
    return "\n".join(
        [
            f"mesh: {mesh} ({devices} devices); compiled in {report.compile_seconds:.1f} s",
            f"parameters: {report.num_params:,}",
            "memory per device:",
            f"  params + optimizer state  {format_bytes(report.state_bytes):>12}",
            f"  arguments (state, batch)  {format_bytes(report.argument_bytes):>12}",
            f"  outputs (not donated)     {format_bytes(report.output_bytes):>12}",
            f"  temporaries               {format_bytes(report.temp_bytes):>12}",
            f"  peak                      {format_bytes(report.peak_bytes):>12}",
            format_flops(report),
        ]
    )
