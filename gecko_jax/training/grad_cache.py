"""GradCache: contrastive gradients for batches far larger than activation memory.

A contrastive loss couples every example of the batch, so the plain step keeps
the activations of the whole batch for the backward pass. GradCache (Gao et
al., 2021) splits the work in two passes over chunks of `chunk_size` texts:

1. embed every chunk without keeping activations, and take the gradient of
   the loss with respect to the embeddings (cheap: they are [B, D], or
   [B, L, d] token vectors from a multi-vector tower);
2. embed each chunk again under `jax.vjp` and pull that chunk's embedding
   gradient back to the parameters, summing over chunks.

Peak memory is that of one chunk, the result equals the plain step's gradient
(exactly so without dropout; with dropout each chunk draws its own masks, the
same ones in both passes). Chunks take strided rows (row r goes to chunk
r mod n), so under data parallelism every device holds an equal share of every
chunk and no chunk waits on one device.
"""

import jax
import jax.numpy as jnp
from flax import linen as nn

from gecko_jax.errors import UserError
from gecko_jax.losses.loss import Loss


def check_chunk_size(chunk_size: int, batch_size: int, data_parallel: int) -> None:
    """Raises a UserError unless chunks tile the batch evenly across devices."""
    if batch_size % chunk_size:
        raise UserError(
            f"grad_cache.chunk_size={chunk_size} does not divide batch_size={batch_size}; pick a divisor"
        )
    if chunk_size % data_parallel:
        raise UserError(
            f"grad_cache.chunk_size={chunk_size} is not a multiple of the "
            f"data-parallel size {data_parallel}; pick a multiple of {data_parallel}"
        )


def _to_chunks(x: jax.Array, num_chunks: int) -> jax.Array:
    """[B, ...] -> [num_chunks, B / num_chunks, ...], chunk c holding rows c, c + n, ..."""
    strided = x.reshape((x.shape[0] // num_chunks, num_chunks) + x.shape[1:])
    return jnp.swapaxes(strided, 0, 1)


def _from_chunks(x: jax.Array) -> jax.Array:
    """Inverse of `_to_chunks`."""
    return jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:])


def grad_cache_value_and_grad(
    model: nn.Module,
    params,
    batch: dict,
    loss: Loss,
    chunk_size: int,
    dropout_rng=None,
):
    """The loss and its parameter gradient, computed chunk by chunk.

    Args:
      model: the embedding tower.
      params: its parameters.
      batch: `{field}_ids` / `{field}_mask` [B, L_field] for each field, plus
        whatever else `loss` reads.
      loss: the loss; the fields of its `text_fields` that `batch` holds are embedded.
      chunk_size: texts per forward pass.
      dropout_rng: None for a deterministic tower, else the step's key.

    Returns:
      (loss, grads) as `jax.value_and_grad` of the plain step would give.
    """
    fields = loss.fields_in(batch)
    num_chunks = batch[f"{fields[0]}_ids"].shape[0] // chunk_size
    deterministic = dropout_rng is None

    def embed(p, ids, mask, key):
        rngs = None if deterministic else {"dropout": key}
        return model.apply({"params": p}, ids, mask, deterministic=deterministic, rngs=rngs)

    def chunk_inputs(index, field):
        ids = _to_chunks(batch[f"{field}_ids"], num_chunks)
        mask = _to_chunks(batch[f"{field}_mask"], num_chunks)
        base = jax.random.key(0) if deterministic else jax.random.fold_in(dropout_rng, index)
        keys = jax.random.split(base, num_chunks)
        return ids, mask, keys

    # Pass 1: embeddings only; nothing here is differentiated.
    inputs = {f: chunk_inputs(i, f) for i, f in enumerate(fields)}
    frozen = jax.lax.stop_gradient(params)
    embeddings = {f: _from_chunks(jax.lax.map(lambda xs: embed(frozen, *xs), inputs[f])) for f in fields}
    value, embedding_grads = jax.value_and_grad(lambda e: loss(e, batch))(embeddings)

    # Pass 2: per chunk, re-embed under vjp and pull the cached gradient back.
    def accumulate(grads, xs):
        ids, mask, key, cotangent = xs
        _, pullback = jax.vjp(lambda p: embed(p, ids, mask, key), params)
        (chunk_grads,) = pullback(cotangent)
        return jax.tree.map(jnp.add, grads, chunk_grads), None

    grads = jax.tree.map(jnp.zeros_like, params)
    for f in fields:
        cotangents = _to_chunks(embedding_grads[f], num_chunks)
        grads, _ = jax.lax.scan(accumulate, grads, (*inputs[f], cotangents))
    return value, grads
