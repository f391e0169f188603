"""Sharding constraints on activations, named by logical axes.

The towers mark their activations with logical axis names (`act_batch`,
`act_len`, `embed`, `mlp`); a run's sharding preset maps those names onto the
axes of its mesh. A constraint only reaches the compiled program when both are
in force where the function is traced: the mesh set with `jax.set_mesh` (a
bare `with mesh:` sets no abstract mesh, and the constraint is silently
dropped) and the rules with `flax.linen.logical_axis_rules`. The training
entry points enter both through `gecko_jax.training.sharding.activated`.

A dimension the mesh axes do not divide (a one-row batch at initialisation, an
evaluation batch's last rows) is left unconstrained rather than refused: the
constraint is a layout hint for the compiler, and the math is the same either
way.
"""

import math
from typing import Sequence

import jax
from flax import linen as nn
from jax.sharding import PartitionSpec as P

ACT_AXES = ("act_batch", "act_len", "embed")


def _mesh_axis_names(entry) -> tuple[str, ...]:
    if entry is None or entry is P.UNCONSTRAINED:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """`x` constrained to the mesh layout its logical axes map to under the current rules.

    Args:
      x: an activation inside a traced function.
      logical_axes: one logical name (or None) per dimension of `x`.

    Returns:
      `x`, with a sharding constraint when a mesh and logical-axis rules are
      in force; unchanged otherwise.
    """
    mesh = jax.sharding.get_abstract_mesh()
    rules = nn.get_logical_axis_rules()
    if mesh.empty or not rules:
        return x
    spec = nn.logical_to_mesh_axes(logical_axes, rules)
    entries = []
    for size, entry in zip(x.shape, tuple(spec) + (None,) * (x.ndim - len(spec))):
        names = _mesh_axis_names(entry)
        ways = math.prod(mesh.shape[name] for name in names)
        entries.append(entry if names and size % ways == 0 else None)
    return jax.lax.with_sharding_constraint(x, P(*entries))
