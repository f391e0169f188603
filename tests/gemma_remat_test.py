"""`model.remat`: Gemma layers recomputed in the backward pass, same gradients, less memory."""

import jax
import numpy as np

from gecko_jax.models.registry import build_tower
from recipe_configs import get_config
from tower_helpers import random_batch, random_params, value_and_grad

_VOCAB = 30522  # The runlocal tower's MiniLM vocabulary.


def _tower(remat: bool, dropout_rate: float):
    model = get_config("gecko_768", "runlocal").model
    model.dropout_rate = dropout_rate
    model.remat = remat
    # The unrolled layers' recomputation; tests/layer_stack_test.py covers scanned ones.
    model.scan_layers = False
    return build_tower(model)


def test_remat_gives_the_same_loss_and_gradients():
    # Dropout on: the recomputation must redraw the forward pass's masks.
    ids, mask = random_batch(8, 32, _VOCAB)
    params = random_params(_tower(False, 0.0), ids, mask)
    loss, grads = value_and_grad(_tower(False, 0.1), False)(params, ids, mask)
    loss_remat, grads_remat = value_and_grad(_tower(True, 0.1), False)(params, ids, mask)
    np.testing.assert_allclose(float(loss_remat), float(loss), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads_remat, grads)


def test_remat_cuts_the_compiled_working_memory():
    ids, mask = random_batch(16, 128, _VOCAB)
    params = random_params(_tower(False, 0.0), ids, mask)

    def temp_bytes(remat):
        step = value_and_grad(_tower(remat, 0.0), True)
        return step.lower(params, ids, mask).compile().memory_analysis().temp_size_in_bytes

    plain, remat = temp_bytes(False), temp_bytes(True)
    print(f"temporary memory: plain {plain / 2**20:.1f} MiB, remat {remat / 2**20:.1f} MiB")
    assert remat < 0.6 * plain
