"""Matryoshka representation learning as a wrapper over any embedding loss.

MRL trains every nested prefix of an embedding to be usable on its own: the
same loss is applied to the first d coordinates of every embedding, each
prefix re-normalised to unit length, and the per-prefix losses are summed
with one weight per prefix. Gecko (arXiv 2403.20327) trains 768 and 256
dimensions this way, Gemini Embedding (arXiv 2503.07891) 768, 1536 and 3072.

The wrapper knows nothing about the loss it wraps: the loss receives a pytree
of [..., D] embeddings (a dict by text field, per-token [B, L, D] arrays, or a
single array) plus any further arguments, which pass through untouched. So
targets that must not be truncated (a batch dict, teacher vectors) go in the
extra arguments.
"""

from typing import Any, Callable, Optional, Sequence

import jax

from gecko_jax.errors import UserError
from gecko_jax.models.tower import truncate_and_normalize


def resolve_dims(
    dims: Sequence[int], weights: Optional[Sequence[float]], full_dim: int
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Checks the prefix sizes and fills in default weights.

    Args:
      dims: prefix sizes; empty means the full embedding only.
      weights: one weight per dim; None or empty means all 1.
      full_dim: D, the size of the embeddings.

    Returns:
      (dims, weights) as tuples of equal length.

    Raises:
      UserError: the weights do not match the dims, or a dim is not in
        [1, full_dim].
    """
    dims = tuple(int(d) for d in dims) or (full_dim,)
    weights = tuple(float(w) for w in weights) if weights else (1.0,) * len(dims)
    if len(weights) != len(dims):
        raise UserError(
            f"{len(weights)} Matryoshka weights for {len(dims)} dims; give "
            f"loss.mrl_weights one weight per entry of loss.mrl_dims"
        )
    for dim in dims:
        if not 0 < dim <= full_dim:
            raise UserError(
                f"Matryoshka dim {dim} is outside [1, {full_dim}] (the embedding width); fix loss.mrl_dims"
            )
    return dims, weights


def matryoshka(
    loss_fn: Callable[..., jax.Array], dims: Sequence[int] = (), weights: Optional[Sequence[float]] = None
) -> Callable[..., jax.Array]:
    """Wraps `loss_fn` into the weighted sum of its values on nested prefixes.

    Args:
      loss_fn: `loss_fn(embeddings, *args, **kwargs) -> scalar`, where
        `embeddings` is a pytree of [..., D] arrays (None leaves allowed).
      dims: prefix sizes; empty means the full (re-normalised) embedding only.
      weights: one weight per dim; None or empty means all 1.

    Returns:
      `wrapped(embeddings, *args, **kwargs) = sum_k weights[k] *
      loss_fn(prefix_k(embeddings), *args, **kwargs)`, where `prefix_k` keeps
      the first dims[k] coordinates of every leaf and L2-normalises them.
    """

    def wrapped(embeddings: Any, *args, **kwargs) -> jax.Array:
        full_dim = jax.tree.leaves(embeddings)[0].shape[-1]
        resolved_dims, resolved_weights = resolve_dims(dims, weights, full_dim)
        total = 0.0
        for dim, weight in zip(resolved_dims, resolved_weights):
            prefix = jax.tree.map(lambda x, d=dim: truncate_and_normalize(x, d), embeddings)
            total += weight * loss_fn(prefix, *args, **kwargs)
        return total

    return wrapped
