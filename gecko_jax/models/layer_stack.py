"""A tower's layers run as one loop over their stacked weights (`jax.lax.scan`).

Unrolled, a 26-layer Gemma puts 26 copies of its block into the compiled
program: tens of MB of HLO, minutes of compile time and GBs of host memory
per batch shape. Scanned, the program holds one loop body, so compile time and
host memory stop growing with depth (the approach MaxText calls
`scan_layers`).

Layers of different kinds share a loop body when the kind is data: Gemma 3's
five sliding-window layers per global one differ only in a mask and a RoPE
base, which XLA attention takes as a per-layer loop input. Where the kind
must be static (a fused kernel's window), the loop body is one period of the
layer kinds (six Gemma 3 layers), looped over the whole periods, and the
layers left after the last whole period run unrolled.

The parameters stay one tree per layer (`layers_{i}`), as checkpoints,
importers and export know them: the stack is built inside the step, which
costs one extra copy of the layers' weights (sharded like them) and the same
for their gradients.

Recomputation (remat) wraps each layer of the body in `jax.checkpoint`. Inside
a loop the recomputation lives in the backward loop, apart from the forward
one, so XLA cannot merge the two by common-subexpression elimination (which it
does to an unrolled `jax.checkpoint` on XLA:CPU); the policy names what each
layer keeps for its backward pass.
"""

from typing import Any, Callable, Hashable, Sequence

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

# layer_fn(kind_index, params, x, extra) -> x, where kind_index < period
# names the layer's kind (a layer index of the first period).
LayerFn = Callable[[int, Any, jax.Array, Any], jax.Array]


def check_remat_policy(name: str) -> None:
    """Refuses a remat policy that is not a key of `REMAT_POLICIES`."""
    if name not in REMAT_POLICIES:
        raise UserError(f"Unknown model.remat_policy {name!r}; use one of {sorted(REMAT_POLICIES)}.")


def period_of(kinds: Sequence[Hashable]) -> int:
    """The shortest period p with kinds[i] == kinds[i % p] for every layer i."""
    for period in range(1, len(kinds) + 1):
        if all(kind == kinds[i % period] for i, kind in enumerate(kinds)):
            return period
    return max(len(kinds), 1)


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def run(
    layer_fn: LayerFn,
    layer_params: Sequence[Any],
    x: jax.Array,
    layer_extras: Sequence[Any],
    period: int,
    remat_policy: str | None,
) -> jax.Array:
    """Runs the layers in order, the whole periods of them as one `jax.lax.scan`.

    Args:
      layer_fn: applies one layer; see `LayerFn`.
      layer_params: each layer's parameter tree, in order.
      x: the input of the first layer.
      layer_extras: a per-layer pytree of arrays (e.g. its dropout key) or None
        each; stacked like the parameters.
      period: layers per loop iteration (`period_of` their kinds).
      remat_policy: a key of `REMAT_POLICIES`, or None to keep activations.

    Returns:
      The output of the last layer.
    """

    def layer(kind):
        def apply(params, h, extra):
            return layer_fn(kind, params, h, extra)

        if remat_policy is None:
            return apply
        # prevent_cse guards unrolled code; inside a loop it only slows the step.
        return jax.checkpoint(apply, policy=REMAT_POLICIES[remat_policy], prevent_cse=False)

    layers = [layer(kind) for kind in range(period)]
    num_layers = len(layer_params)
    looped = num_layers - num_layers % period
    if looped:

        def body(h, per_period):
            params, extras = per_period
            for kind in range(period):
                h = layers[kind](params[kind], h, extras[kind])
            return h, None

        # Entry `kind` of the loop's inputs stacks layers kind, kind + period, ...
        params = tuple(_stack(layer_params[kind:looped:period]) for kind in range(period))
        extras = tuple(_stack(layer_extras[kind:looped:period]) for kind in range(period))
        x, _ = jax.lax.scan(body, x, (params, extras))
    for i in range(looped, num_layers):
        x = layers[i % period](layer_params[i], x, layer_extras[i])
    return x
