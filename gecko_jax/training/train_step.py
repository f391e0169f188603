"""The train state and the jitted train step of a dual encoder.

Queries, positives and hard negatives go through the one shared tower, texts
of one padded length in one forward pass, and the loss sees the global batch,
so under `jit` with a batch-sharded input every query is scored against the
positives and negatives of every device. The embeddings are [B, D] from a
single-vector tower or [B, L_field, d] token vectors from a multi-vector one
(queries and documents may then differ in L); the step treats both alike.
Only the text fields the loss reads (`Loss.text_fields`) are embedded.
"""

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from gecko_jax.data.batch_spec import TEXT_FIELDS
from gecko_jax.losses.loss import Loss
from gecko_jax.training import sharding as sharding_lib
from gecko_jax.training.grad_cache import grad_cache_value_and_grad


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint must hold to continue a run exactly."""

    step: jax.Array
    params: Any
    opt_state: Any


def param_shapes(model: nn.Module, max_length: int):
    """The unboxed parameter tree as shapes, without allocating anything."""
    ids = jax.ShapeDtypeStruct((1, max_length), jnp.int32)
    variables = jax.eval_shape(model.init, {"params": jax.random.key(0)}, ids, ids)
    return nn.unbox(variables["params"])


def init_train_state(
    model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array, max_length: int
) -> TrainState:
    """A fresh state with logically annotated (boxed) parameters."""
    ids = jnp.ones((1, max_length), jnp.int32)
    params = model.init({"params": rng}, ids, ids)["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(nn.unbox(params)))


def state_shardings(
    abstract: TrainState, tx: optax.GradientTransformation, mesh, rules=sharding_lib.LOGICAL_AXIS_RULES
) -> TrainState:
    """Parameter shardings from their logical names and `rules`; optimizer moments follow them."""
    with nn.logical_axis_rules(rules):
        param_shardings = sharding_lib.logical_to_shardings(abstract.params, mesh, rules)
    replicated = sharding_lib.replicated(mesh)
    # Frozen parameter groups leave MaskedNode placeholders (no state) in place.
    opt_shardings = optax.tree_utils.tree_map_params(
        tx,
        lambda v, s: v if isinstance(v, optax.MaskedNode) else s,
        abstract.opt_state,
        param_shardings,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, (jax.sharding.Sharding, optax.MaskedNode)),
    )
    return TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings)


def encode_batch(
    model: nn.Module,
    params,
    batch: dict,
    *,
    deterministic: bool,
    dropout_rng=None,
    fields: tuple[str, ...] = TEXT_FIELDS,
) -> dict[str, jax.Array]:
    """Embeds the query/positive/negative texts of a batch.

    Texts of one padded length share a forward pass: one pass in all when
    queries are as long as documents, else one for the (shorter) queries and
    one for positives and negatives together.

    Args:
      model: the embedding tower.
      params: its parameters.
      batch: `{field}_ids` / `{field}_mask` [B, L_field] for each field.
      deterministic: disables dropout.
      dropout_rng: the step's dropout key (when not deterministic).
      fields: the text fields to embed.

    Returns:
      Embeddings by field: [B, D], or [B, L_field, d] for a multi-vector tower.
    """
    groups = {}
    for field in fields:
        groups.setdefault(batch[f"{field}_ids"].shape[1], []).append(field)
    embeddings = {}
    for index, fields in enumerate(groups.values()):
        ids = jnp.concatenate([batch[f"{f}_ids"] for f in fields], axis=0)
        mask = jnp.concatenate([batch[f"{f}_mask"] for f in fields], axis=0)
        rngs = None if deterministic else {"dropout": jax.random.fold_in(dropout_rng, index)}
        emb = model.apply({"params": params}, ids, mask, deterministic=deterministic, rngs=rngs)
        embeddings.update(zip(fields, jnp.split(emb, len(fields), axis=0)))
    return embeddings


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    loss: Loss,
    schedule: optax.Schedule,
    grad_cache_chunk_size: int = 0,
    frozen: Any = None,
    flops: Any = None,
) -> Callable:
    """Returns `train_step(state, batch, rng) -> (state, metrics)`, not yet jitted.

    Args:
      model: the embedding tower.
      tx: the optimizer.
      loss: the loss; only its `text_fields` are embedded.
      schedule: the learning-rate schedule, for logging.
      grad_cache_chunk_size: texts per forward pass with GradCache; 0 embeds
        the whole batch at once (the plain step).
      frozen: a tree like the parameters, True where one is frozen
        (`optimizers.frozen_mask`), or None; frozen gradients are left out of
        the logged `grad_norm`, as they are out of the clipping norm.
      flops: a `model_flops.ModelFlops` of the tower, or None; with it the
        metrics hold `model_flops`, the step's FLOPs over the real tokens.
    """

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        fields = loss.fields_in(batch)
        # Dropout depends on the step only, so a resumed run draws the same masks.
        dropout_rng = jax.random.fold_in(rng, state.step)

        def compute_loss(params):
            embeddings = encode_batch(
                model, params, batch, deterministic=False, dropout_rng=dropout_rng, fields=fields
            )
            return loss(embeddings, batch)

        if grad_cache_chunk_size:
            value, grads = grad_cache_value_and_grad(
                model, state.params, batch, loss, grad_cache_chunk_size, dropout_rng
            )
        else:
            value, grads = jax.value_and_grad(compute_loss)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": value,
            "grad_norm": _trainable_norm(grads, frozen),
            "learning_rate": schedule(state.step),
            "tokens": sum(jnp.sum(batch[f"{f}_mask"]) for f in fields),
        }
        if flops is not None:
            metrics["model_flops"] = sum(flops.of_texts(batch[f"{f}_mask"]) for f in fields)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def _trainable_norm(grads: Any, frozen: Any) -> jax.Array:
    """The global norm of the gradients of the parameters that train, before clipping."""
    if frozen is None:
        return optax.global_norm(grads)
    return optax.global_norm(
        jax.tree.leaves(jax.tree.map(lambda grad, is_frozen: None if is_frozen else grad, grads, frozen))
    )
