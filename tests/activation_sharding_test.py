"""Activation sharding constraints reach the compiled train step.

A bare `with mesh:` sets no abstract mesh, and flax then drops every logical
constraint without a word: the program still computes the same numbers, but
the compiler is free to replicate the batch and split the hidden dimension
instead. Equality tests cannot see that, so these tests read the programs.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from gecko_jax.models.activation_sharding import ACT_AXES, constrain
from gecko_jax.training import aot
from gecko_jax.training import sharding
from recipe_configs import get_config

_CONSTRAINT = re.compile(r"sdy\.sharding_constraint %\S+ <@mesh, \[(.*?)\]> : tensor<([0-9x]+)x")


def _fsdp_runlocal(name: str):
    config = get_config(name, "runlocal")
    config.sharding = "fsdp"
    config.mesh_shape.update(data=1, fsdp=-1, tensor=1)
    config.model.dropout_rate = 0.0
    return config


def _constraints(lowered) -> list[tuple[str, tuple[int, ...]]]:
    """(first dimension's mesh axes, shape) of every sharding constraint."""
    found = []
    for axes, shape in _CONSTRAINT.findall(lowered.as_text()):
        first = axes.split("}")[0].lstrip("{")
        found.append((first, tuple(int(n) for n in shape.split("x"))))
    return found


@pytest.mark.parametrize("recipe", ["gecko_768", "gecko_minilm"])
def test_train_step_constrains_activations_to_the_batch_axes(recipe):
    config = _fsdp_runlocal(recipe)
    mesh = sharding.create_mesh(config.mesh_shape, jax.devices())
    _, lowered = aot.lower_train_step(config, mesh)
    constraints = _constraints(lowered)
    # Each layer's output and MLP hidden state, and the embeddings, for the
    # query pass and the document pass; a scanned tower's loop body is one layer.
    layers = 1 if config.model.scan_layers else config.model.num_layers
    assert len(constraints) >= 2 * (2 * layers + 1), constraints
    batch_rows = {config.batch_size, 2 * config.batch_size}
    for first_axes, shape in constraints:
        assert first_axes == '"data", "fsdp"', (first_axes, shape)
        assert shape[0] in batch_rows, shape

    # In the compiled program every device holds its rows of the MLP hidden
    # state, and no device the whole batch of it.
    compiled = lowered.compile().as_text()
    width = config.model.intermediate_size
    rows = config.batch_size // mesh.size
    per_device = re.findall(rf"f32\[(\d+),\d+,{width}\]", compiled)
    assert str(rows) in per_device, sorted(set(per_device))
    assert str(config.batch_size) not in per_device and str(2 * config.batch_size) not in per_device


def test_constrain_is_a_no_op_without_a_mesh_or_rules():
    x = jnp.ones((8, 4, 6))
    text = jax.jit(lambda v: constrain(v, ACT_AXES)).lower(x).as_text()
    assert "sharding_constraint" not in text
    mesh = sharding.create_mesh({"data": -1}, jax.devices())
    with jax.set_mesh(mesh):  # A mesh, but no rules.
        text = jax.jit(lambda v: constrain(v, ACT_AXES)).lower(x).as_text()
    assert "sharding_constraint" not in text


def test_constrain_leaves_a_dimension_the_mesh_does_not_divide_unsplit():
    mesh = sharding.create_mesh({"data": -1}, jax.devices())
    with sharding.activated(mesh, sharding.SHARDING_PRESETS["dp"]):
        divisible = jax.jit(lambda v: constrain(v, ACT_AXES)).lower(jnp.ones((16, 4, 6)))
        one_row = jax.jit(lambda v: constrain(v, ACT_AXES))
        odd = one_row.lower(jnp.ones((1, 4, 6)))
        out = one_row(np.arange(24.0).reshape(1, 4, 6))
    assert _constraints(divisible) == [('"data", "fsdp"', (16, 4, 6))]
    assert _constraints(odd) == [("", (1, 4, 6))]
    np.testing.assert_array_equal(out, np.arange(24.0).reshape(1, 4, 6))


def test_trainer_context_sets_the_abstract_mesh():
    mesh = sharding.create_mesh({"fsdp": -1}, jax.devices())
    with sharding.activated(mesh, sharding.SHARDING_PRESETS["fsdp"]):
        assert not jax.sharding.get_abstract_mesh().empty
        assert nn.get_logical_axis_rules() == sharding.SHARDING_PRESETS["fsdp"]
    assert jax.sharding.get_abstract_mesh().empty
