"""Random batches and parameters for tests that compare two builds of a tower."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn


def random_batch(size: int, length: int, vocab: int):
    """(ids, mask) of `size` right-padded texts of 3 to `length` tokens."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, length + 1, size=size)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    ids = (rng.integers(1, vocab, size=(size, length)) * mask).astype(np.int32)
    return ids, mask


def random_params(tower: nn.Module, ids, mask):
    """N(0, 0.1) values for every parameter of `tower`, norm scales included.

    Drawn in NumPy from the abstract shapes, so the initialisers never compile.
    """
    abstract = jax.eval_shape(lambda: nn.unbox(tower.init(jax.random.key(0), ids[:1], mask[:1])["params"]))
    rng = np.random.default_rng(1)
    return jax.tree.map(lambda x: rng.normal(0, 0.1, x.shape).astype(np.float32), abstract)


def value_and_grad(tower: nn.Module, deterministic: bool):
    """A jitted (params, ids, mask) -> (loss, grads) of a loss pairing the batch's halves.

    With `deterministic` False, dropout draws from a fixed key, so two builds
    of the tower that draw the same masks give the same loss.
    """

    def loss(params, ids, mask):
        emb = tower.apply(
            {"params": params}, ids, mask, deterministic=deterministic, rngs={"dropout": jax.random.key(3)}
        )
        return jnp.sum(emb[: len(emb) // 2] * emb[len(emb) // 2 :])

    return jax.jit(jax.value_and_grad(loss))
