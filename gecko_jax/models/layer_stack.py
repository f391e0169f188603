"""A tower's layers run as one loop over their stacked weights (`jax.lax.scan`).

Unrolled, a 26-layer Gemma puts 26 copies of its block into the compiled
program: tens of MB of HLO, minutes of compile time and GBs of host memory
per batch shape. Scanned, the program holds one loop body, so compile time and
host memory stop growing with depth (the approach MaxText calls
`scan_layers`).

Layers of different kinds share the loop body, their kind being a per-layer
loop input: Gemma 3's five sliding-window layers per global one differ in a
mask and a RoPE base, chosen in the program, and a fused kernel, whose window
is a constant, runs under `jax.lax.cond` on the kind.

The parameters stay one tree per layer (`layers_{i}`), as checkpoints,
importers and export know them: the stack is built inside the step, which
costs one extra copy of the layers' weights (sharded like them) and the same
for their gradients.

Recomputation (remat) wraps the loop body, one layer, in `jax.checkpoint`. Inside
a loop the recomputation lives in the backward loop, apart from the forward
one, so XLA cannot merge the two by common-subexpression elimination (which it
does to an unrolled `jax.checkpoint` on XLA:CPU); the policy names what each
layer keeps for its backward pass.
"""

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from gecko_jax.errors import UserError

# What a recomputed layer keeps for its backward pass, beyond its input.
REMAT_POLICIES = {
    # Nothing: every activation is recomputed (the least memory).
    "full": jax.checkpoint_policies.nothing_saveable,
    # The outputs of weight matmuls: attention scores and elementwise work
    # are recomputed, the projections are not (less recomputation, more memory).
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}

# layer_fn(params, x, extra) -> x for one layer.
LayerFn = Callable[[Any, jax.Array, Any], jax.Array]


def check_remat_policy(name: str) -> None:
    """Refuses a remat policy that is not a key of `REMAT_POLICIES`."""
    if name not in REMAT_POLICIES:
        raise UserError(f"Unknown model.remat_policy {name!r}; use one of {sorted(REMAT_POLICIES)}.")


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def run(
    layer_fn: LayerFn,
    layer_params: Sequence[Any],
    x: jax.Array,
    layer_extras: Sequence[Any],
    remat_policy: str | None,
) -> jax.Array:
    """Runs the layers in order as one `jax.lax.scan`.

    Args:
      layer_fn: applies one layer; see `LayerFn`.
      layer_params: each layer's parameter tree, in order.
      x: the input of the first layer.
      layer_extras: a per-layer pytree of arrays (its dropout key, its kind)
        or None each; stacked like the parameters.
      remat_policy: a key of `REMAT_POLICIES`, or None to keep activations.

    Returns:
      The output of the last layer.
    """
    if not layer_params:
        return x
    layer = layer_fn
    if remat_policy is not None:
        # prevent_cse guards unrolled code; inside a loop it only slows the step.
        layer = jax.checkpoint(layer_fn, policy=REMAT_POLICIES[remat_policy], prevent_cse=False)

    def body(h, per_layer):
        params, extra = per_layer
        return layer(params, h, extra), None

    x, _ = jax.lax.scan(body, x, (_stack(layer_params), _stack(layer_extras)))
    return x
