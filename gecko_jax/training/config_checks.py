"""The ranges of the config's fields, checked before a run reads data or touches its workdir.

A value out of range otherwise shows up late and far from its cause: `log_every=0`
as a ZeroDivisionError after start-up, `keep_checkpoints=0` as every checkpoint
deleted. `check_config` refuses such values in one line naming the
`--config.FIELD` to change; `check_for_mesh` adds what depends on the device
count. Fields a recipe must pick from a list (`model.name`, `loss.name`, ...)
are checked where they are looked up, which lists the choices.
"""

import functools
import math

import ml_collections

from gecko_jax.errors import UserError
from gecko_jax.losses.registry import check_tower_for_loss
from gecko_jax.training import sharding
from gecko_jax.training.evaluators import config_specs
from gecko_jax.training.grad_cache import check_chunk_size

# Field -> the least value it may take.
_AT_LEAST = {
    "seed": 0,
    "total_steps": 1,
    "batch_size": 1,
    "log_every": 1,
    "eval_every": 0,
    "checkpoint_every": 0,
    "keep_checkpoints": 1,
    "model.vocab_size": 1,
    "model.hidden_size": 1,
    "model.num_layers": 1,
    "model.num_heads": 1,
    "model.intermediate_size": 1,
    "model.max_position_embeddings": 1,
    "model.type_vocab_size": 1,
    "model.projection_dim": 0,
    "model.multi_vector_dim": 0,
    "model.num_kv_heads": 1,
    "model.head_dim": 1,
    "model.query_pre_attn_scalar": 0,
    "model.sliding_window": 0,
    "model.sliding_window_pattern": 1,
    "model.attn_logit_softcap": 0,
    "model.final_logit_softcap": 0,
    "data.max_length": 3,
    "data.query_max_length": 0,
    "loss.spread_out_weight": 0,
    "loss.jasper_margin": 0,
    "loss.jasper_chunk_size": 1,
    "loss.xtr_k_train": 1,
    "optimizer.warmup_steps": 0,
    "optimizer.weight_decay": 0,
    "optimizer.eps": 0,
    "optimizer.grad_clip_norm": 0,
    "optimizer.grad_accum_steps": 1,
    "grad_cache.chunk_size": 0,
    "eval_batch_size": 1,
}
# Fields that must be finite and above 0.
_POSITIVE = (
    "model.layer_norm_eps",
    "model.rope_global_base",
    "model.rope_local_base",
    "model.rope_scaling_factor",
    "loss.temperature",
    "optimizer.learning_rate",
)
# Field -> (low, high), low included, high excluded unless `_CLOSED`.
_BETWEEN = {
    "model.dropout_rate": (0, 1),
    "model.attention_dropout_rate": (0, 1),
    "optimizer.b1": (0, 1),
    "optimizer.b2": (0, 1),
    "optimizer.end_lr_fraction": (0, 1),
}
_CLOSED = ("optimizer.end_lr_fraction",)
# Tuple field -> the least value each entry may take.
_EACH_AT_LEAST = {
    "loss.mrl_dims": 1,
    "loss.mrl_weights": 0,
    "loss.jasper_weights": 0,
    "loss.jasper_teacher_dims": 1,
}
_CHOICES = {"best_mode": ("max", "min"), "optimizer.decay": ("cosine", "linear", "constant")}


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises UserError for the first field of `config` out of its range.

    Args:
      config: a config built on `gecko_jax.config_base.base_config()`.
    """
    for field, low in _AT_LEAST.items():
        value = _get(config, field)
        _require(field, value, _is_number(value) and value >= low, f"use {low} or more")
    for field in _POSITIVE:
        value = _get(config, field)
        _require(field, value, _is_number(value) and value > 0, "use a finite value above 0")
    for field, (low, high) in _BETWEEN.items():
        value = _get(config, field)
        closed = field in _CLOSED
        inside = _is_number(value) and low <= value and (value <= high if closed else value < high)
        _require(field, value, inside, f"use a value in [{low}, {high}{']' if closed else ')'}")
    for field, low in _EACH_AT_LEAST.items():
        _check_each(field, _get(config, field), low)
    for spec in config_specs(config):
        _require(f"evals.{spec.name}.every", spec.every, spec.every >= 0, "use 0 or more")
        _check_each(f"evals.{spec.name}.dims", spec.dims, 1)
    for field, choices in _CHOICES.items():
        value = _get(config, field)
        _require(field, value, value in choices, f"use one of {', '.join(choices)}")
    check_tower_for_loss(config.loss.name, config.model.multi_vector_dim, config.model.salience_heads)


def check_for_mesh(config: ml_collections.ConfigDict, mesh) -> None:
    """Raises UserError when the batch sizes do not split over the mesh's data-parallel devices."""
    dp = sharding.data_parallel_size(mesh)
    if config.batch_size % dp:
        raise UserError(
            f"--config.batch_size={config.batch_size} is not divisible by the "
            f"data-parallel size {dp} (mesh {dict(mesh.shape)}); pick a multiple "
            f"of {dp}"
        )
    if config.evals and config.eval_batch_size % dp:
        raise UserError(
            f"--config.eval_batch_size={config.eval_batch_size} is not divisible by "
            f"the data-parallel size {dp}; pick a multiple of {dp}"
        )
    if config.grad_cache.chunk_size:
        check_chunk_size(config.grad_cache.chunk_size, config.batch_size, dp)


def _get(config: ml_collections.ConfigDict, field: str):
    return functools.reduce(getattr, field.split("."), config)


def _is_number(value) -> bool:
    # bool is an int, but True is no step count.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_each(field: str, values, low) -> None:
    for value in values:
        _require(field, values, _is_number(value) and value >= low, f"every entry must be {low} or more")


def _require(field: str, value, ok: bool, rule: str) -> None:
    if not ok:
        raise UserError(f"--config.{field}={value!r} is out of range; {rule}")
