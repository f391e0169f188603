"""The sharded train step of a config, built abstractly: no data, no weights.

The trainer runs this program; ahead-of-time compilation (`training.aot`)
lowers the very same one for a target mesh, so a memory estimate made before
booking a pod describes the step that will run on it.
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import ml_collections
import optax
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding

from gecko_jax.losses.registry import build_loss
from gecko_jax.models.registry import build_tower
from gecko_jax.training import sharding
from gecko_jax.training.model_flops import ModelFlops, model_flops
from gecko_jax.training.optimizers import frozen_mask, make_optimizer
from gecko_jax.training.train_step import (
    TrainState,
    init_train_state,
    make_train_step,
    param_shapes,
    state_shardings,
)


@dataclasses.dataclass(frozen=True)
class TrainProgram:
    """What a run needs to initialise, shard and step its train state.

    Attributes:
      model: the embedding tower.
      tx: the optimizer.
      rules: the logical-axis rules of `config.sharding`; activations are
        constrained with them, so run the jitted functions inside
        `sharding.activated(mesh, rules)`.
      abstract_state: the unboxed TrainState as `jax.ShapeDtypeStruct`s.
      shardings: a TrainState of NamedShardings.
      batch_sharding: rows over (data, fsdp).
      init_fn: jitted `rng -> TrainState`, a random init laid out by `shardings`.
      train_step: jitted `(state, batch, rng) -> (state, metrics)`; it donates
        the state it is given.
      flops: the tower's `ModelFlops`, which the step's metrics count with.
    """

    model: nn.Module
    tx: optax.GradientTransformation
    rules: tuple
    abstract_state: TrainState
    shardings: TrainState
    batch_sharding: NamedSharding
    init_fn: Callable[[jax.Array], TrainState]
    train_step: Callable[..., Any]
    flops: ModelFlops


def build_train_program(config: ml_collections.ConfigDict, mesh: Mesh) -> TrainProgram:
    """Builds tower, optimizer, loss and the jitted init and step for `mesh`.

    Args:
      config: a config built on `gecko_jax.config_base.base_config()`.
      mesh: the (data, fsdp, tensor) mesh; a mesh of simulated devices works
        for lowering and compiling.

    Returns:
      The TrainProgram. Nothing is allocated on the devices yet.

    Raises:
      UserError: an unknown sharding preset, or one that leaves a mesh axis
        larger than 1 unused; bad model, loss or optimizer fields.
    """
    rules = sharding.preset_rules(config.sharding)
    sharding.check_preset_uses_mesh(config.sharding, dict(mesh.shape))
    model = build_tower(config.model)
    shapes = param_shapes(model, config.data.max_length)
    tx, schedule = make_optimizer(config.optimizer, config.total_steps, shapes)
    loss = build_loss(config.loss)
    boxed_init = functools.partial(init_train_state, model, tx, max_length=config.data.max_length)
    # Shapes do not depend on the key's value.
    abstract_boxed = jax.eval_shape(boxed_init, jax.random.key(0))
    shardings = state_shardings(abstract_boxed, tx, mesh, rules)
    batch_sharding = sharding.batch_sharding(mesh)
    init_fn = jax.jit(lambda rng: nn.unbox(boxed_init(rng)), out_shardings=shardings)
    flops = model_flops(config.model, shapes)
    train_step = jax.jit(
        make_train_step(
            model,
            tx,
            loss,
            schedule,
            config.grad_cache.chunk_size,
            frozen_mask(config.optimizer, shapes),
            flops,
        ),
        in_shardings=(shardings, batch_sharding, None),
        out_shardings=(shardings, None),
        donate_argnums=(0,),
    )
    return TrainProgram(
        model=model,
        tx=tx,
        rules=rules,
        abstract_state=nn.unbox(abstract_boxed),
        shardings=shardings,
        batch_sharding=batch_sharding,
        init_fn=init_fn,
        train_step=train_step,
        flops=flops,
    )
