"""The ~1B gecko_768 train state splits 8 ways under FSDP (abstractly: nothing is allocated)."""

import functools
import math

import jax
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

from gecko_jax.models.registry import build_tower
from gecko_jax.training import sharding
from gecko_jax.training.optimizers import make_optimizer
from gecko_jax.training.train_step import init_train_state, param_shapes, state_shardings
from recipe_configs import get_config

FSDP = 8
# Gemma 3 1B: 262,144 x 1152 embedding + 26 layers of 26,842,112 + the final
# norm; the released checkpoint has exactly this many parameters.
GEMMA3_1B_PARAMS = 999_885_952
LARGE = 1 << 16  # Elements from which an array must be split.


@pytest.fixture(scope="module")
def abstract_state():
    config = get_config("gecko_768")
    model = build_tower(config.model)
    length = 16  # Parameter shapes do not depend on it.
    tx, _ = make_optimizer(config.optimizer, config.total_steps, param_shapes(model, length))
    init = functools.partial(init_train_state, model, tx, max_length=length)
    boxed = jax.eval_shape(init, jax.random.key(0))
    mesh = sharding.create_mesh({"data": 1, "fsdp": FSDP, "tensor": 1}, jax.devices())
    return nn.unbox(boxed), state_shardings(boxed, tx, mesh)


def _bytes(tree, shardings):
    """(total bytes, bytes on the first device) over the arrays of `tree`."""
    arrays, placed = jax.tree.leaves(tree), jax.tree.leaves(shardings)
    assert len(arrays) == len(placed)
    total = sum(x.size * x.dtype.itemsize for x in arrays)
    per_device = sum(math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize for x, s in zip(arrays, placed))
    return total, per_device


def test_the_backbone_has_the_gemma3_1b_parameter_count(abstract_state):
    state, _ = abstract_state
    backbone = sum(x.size for x in jax.tree.leaves(state.params["backbone"]))
    total = sum(x.size for x in jax.tree.leaves(state.params))
    print(f"gecko_768: {total:,} parameters ({backbone:,} in the Gemma 3 backbone)")
    assert backbone == GEMMA3_1B_PARAMS
    assert total == GEMMA3_1B_PARAMS + 1152 * 768  # Plus the projection to 768.


@pytest.mark.parametrize("part", ["params", "opt_state"])
def test_each_device_holds_an_eighth(abstract_state, part):
    state, shardings = abstract_state
    total, per_device = _bytes(getattr(state, part), getattr(shardings, part))
    print(f"{part}: {total / 2**30:.3f} GiB in all, {per_device / 2**30:.4f} GiB per device")
    assert total > 0
    # Only the per-head QK-norm scales ([256] each) stay replicated.
    np.testing.assert_allclose(per_device / total, 1 / FSDP, rtol=1e-3)


def test_every_large_matrix_is_split_over_fsdp(abstract_state):
    state, shardings = abstract_state
    flat_params = traverse_util.flatten_dict(state.params)
    flat_shardings = traverse_util.flatten_dict(shardings.params)
    large = [key for key, x in flat_params.items() if x.size >= LARGE]
    # q, k, v, out, gate, up and down of 26 layers, the embedding, the projection.
    assert len(large) == 26 * 7 + 2
    for key in large:
        shard = flat_shardings[key].shard_shape(flat_params[key].shape)
        assert math.prod(shard) * FSDP == flat_params[key].size, "/".join(key)
