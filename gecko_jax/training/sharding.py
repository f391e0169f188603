"""Sharding as data: a named mesh and the logical-axis rules that map onto it.

Parameters carry logical names (`vocab`, `embed`, `mlp`, `heads`, `kv`) and
activations `act_batch`/`act_len`; a preset's rules say which mesh axis each
name is split over. The batch is always split over (data, fsdp). Flax skips a
rule whose mesh axis is already used in the same array, so `embed`
activations fall back to replication when the batch has taken `fsdp`.

Presets (`config.sharding`):
  fsdp     every parameter split over `fsdp` along its `embed` dimension;
           no tensor parallelism (the default of MaxText-style ~1B runs).
  fsdp_tp  as fsdp, plus `vocab`, `mlp` and `heads` split over `tensor`.
  dp       parameters replicated; only the batch is split.
"""

import contextlib
import math
from typing import Iterator, Mapping

import jax
import numpy as np
from flax import linen as nn
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gecko_jax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

_ACTIVATION_RULES = (
    ("act_batch", BATCH_AXES),
    ("act_len", None),
)

SHARDING_PRESETS = {
    "fsdp": _ACTIVATION_RULES
    + (
        ("vocab", None),
        ("embed", "fsdp"),
        ("mlp", None),
        ("heads", None),
        ("kv", None),
    ),
    "fsdp_tp": _ACTIVATION_RULES
    + (
        ("vocab", "tensor"),
        ("embed", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("kv", None),
    ),
    "dp": _ACTIVATION_RULES
    + (
        ("vocab", None),
        ("embed", None),
        ("mlp", None),
        ("heads", None),
        ("kv", None),
    ),
}
DEFAULT_SHARDING = "fsdp_tp"
# The default preset's rules, for code that builds a mesh without a config.
LOGICAL_AXIS_RULES = SHARDING_PRESETS[DEFAULT_SHARDING]


def preset_rules(name: str) -> tuple:
    """The logical-axis rules of the preset `name`.

    Raises:
      UserError: `name` is not a preset.
    """
    if name not in SHARDING_PRESETS:
        raise UserError(
            f"unknown sharding preset {name!r}; set --config.sharding to one of {sorted(SHARDING_PRESETS)}"
        )
    return SHARDING_PRESETS[name]


def check_preset_uses_mesh(name: str, mesh_shape: Mapping[str, int]) -> None:
    """Refuses a mesh axis of size > 1 that the preset never splits anything over.

    Such an axis would hold identical copies doing identical work.

    Raises:
      UserError: the preset leaves a mesh axis larger than 1 unused.
    """
    used = set(BATCH_AXES)
    for _, axes in preset_rules(name):
        used.update((axes,) if isinstance(axes, str) else tuple(axes or ()))
    for axis in MESH_AXES:
        if axis not in used and mesh_shape.get(axis, 1) > 1:
            raise UserError(
                f"sharding={name!r} does not use the mesh axis {axis!r} "
                f"(size {mesh_shape[axis]}); set --config.mesh_shape.{axis}=1 "
                "or --config.sharding=fsdp_tp"
            )


def resolve_mesh_shape(mesh_shape: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Fills in the one -1 axis and checks the product is the device count."""
    unknown = set(mesh_shape) - set(MESH_AXES)
    if unknown:
        raise UserError(f"mesh_shape has unknown axes {sorted(unknown)}; use {MESH_AXES}")
    shape = {axis: int(mesh_shape.get(axis, 1)) for axis in MESH_AXES}
    free = [axis for axis, size in shape.items() if size == -1]
    if len(free) > 1 or any(size == 0 or size < -1 for size in shape.values()):
        raise UserError(f"mesh_shape {shape}: sizes must be positive, with at most one -1")
    fixed = math.prod(size for size in shape.values() if size != -1)
    if free:
        if num_devices % fixed:
            raise UserError(
                f"mesh_shape {shape} does not divide {num_devices} devices; "
                f"make the fixed axes multiply to a divisor of {num_devices}"
            )
        shape[free[0]] = num_devices // fixed
    if math.prod(shape.values()) != num_devices:
        raise UserError(
            f"mesh_shape {shape} needs {math.prod(shape.values())} devices but "
            f"{num_devices} are present; set one axis to -1"
        )
    return shape


def create_mesh(mesh_shape: Mapping[str, int], devices=None) -> Mesh:
    """Builds the (data, fsdp, tensor) mesh over `devices` (default: all, of all hosts)."""
    if devices is None:
        shape = resolve_mesh_shape(mesh_shape, jax.device_count())
        # On TPU, mesh_utils lays the axes along the physical chip topology so
        # that neighbours on an axis are neighbours on the interconnect; on
        # other platforms it keeps the device order.
        grid = mesh_utils.create_device_mesh(
            [shape[axis] for axis in MESH_AXES], allow_split_physical_axes=True
        )
    else:
        shape = resolve_mesh_shape(mesh_shape, len(devices))
        grid = np.asarray(devices).reshape([shape[axis] for axis in MESH_AXES])
    return Mesh(grid, MESH_AXES)


@contextlib.contextmanager
def activated(mesh: Mesh, rules) -> Iterator[None]:
    """Puts `mesh` and the logical-axis `rules` in force for tracing and running.

    `jax.set_mesh` (not a bare `with mesh:`, which sets no abstract mesh) is
    what lets the towers' activation constraints reach the compiled program;
    see `gecko_jax.models.activation_sharding`. Everything that traces a tower
    on a mesh (init, the train step, in-training evaluation, AOT compiles)
    runs inside this context.
    """
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def data_parallel_size(mesh: Mesh) -> int:
    """How many ways the batch is split."""
    return math.prod(mesh.shape[axis] for axis in BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows over (data, fsdp), everything else replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _divisible_spec(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
    """Drops the mesh axes of any dimension they do not divide evenly.

    A 30522-row vocabulary cannot be split 4 ways; replicating that one
    dimension costs a little memory, where failing would stop the run.
    """
    entries = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        ways = math.prod(mesh.shape[name] for name in names)
        entries.append(axes if dim % ways == 0 else None)
    return P(*entries)


def logical_to_shardings(boxed_tree, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """NamedShardings for a pytree of (abstract) arrays with logical annotations."""
    specs = nn.get_partition_spec(boxed_tree)
    mesh_specs = nn.logical_to_mesh(specs, rules)
    arrays = nn.unbox(boxed_tree)
    return jax.tree.map(
        lambda spec, x: NamedSharding(mesh, _divisible_spec(spec, x.shape, mesh)),
        mesh_specs,
        arrays,
        is_leaf=lambda x: isinstance(x, P),
    )
