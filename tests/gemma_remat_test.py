"""`model.remat`: Gemma layers recomputed in the backward pass, same gradients, less memory."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from gecko_jax.models.registry import build_tower
from recipe_configs import get_config


def _tower(remat: bool, dropout_rate: float):
    model = get_config("gecko_768", "runlocal").model
    model.dropout_rate = dropout_rate
    model.remat = remat
    # The unrolled layers' recomputation; tests/layer_stack_test.py covers scanned ones.
    model.scan_layers = False
    return build_tower(model)


def _value_and_grad(tower, deterministic: bool):
    def loss(params, ids, mask):
        emb = tower.apply(
            {"params": params}, ids, mask, deterministic=deterministic, rngs={"dropout": jax.random.key(3)}
        )
        return jnp.sum(emb[: len(emb) // 2] * emb[len(emb) // 2 :])

    return jax.jit(jax.value_and_grad(loss))


def _batch(size: int, length: int):
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, length + 1, size=size)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    ids = (rng.integers(1, 30522, size=(size, length)) * mask).astype(np.int32)
    return ids, mask


def _abstract_params(ids, mask):
    return jax.eval_shape(
        lambda: nn.unbox(_tower(False, 0.0).init(jax.random.key(0), ids[:1], mask[:1])["params"])
    )


def test_remat_gives_the_same_loss_and_gradients():
    # Dropout on: the recomputation must redraw the forward pass's masks.
    ids, mask = _batch(8, 32)
    rng = np.random.default_rng(1)
    # Random values, norm scales included, without compiling the initialisers.
    params = jax.tree.map(
        lambda x: rng.normal(0, 0.1, x.shape).astype(np.float32), _abstract_params(ids, mask)
    )
    loss, grads = _value_and_grad(_tower(False, 0.1), False)(params, ids, mask)
    loss_remat, grads_remat = _value_and_grad(_tower(True, 0.1), False)(params, ids, mask)
    np.testing.assert_allclose(float(loss_remat), float(loss), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads_remat, grads)


def test_remat_cuts_the_compiled_working_memory():
    ids, mask = _batch(16, 128)
    abstract = _abstract_params(ids, mask)

    def temp_bytes(remat):
        step = _value_and_grad(_tower(remat, 0.0), True)
        return step.lower(abstract, ids, mask).compile().memory_analysis().temp_size_in_bytes

    plain, remat = temp_bytes(False), temp_bytes(True)
    print(f"temporary memory: plain {plain / 2**20:.1f} MiB, remat {remat / 2**20:.1f} MiB")
    assert remat < 0.6 * plain
