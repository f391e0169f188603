"""Optimizers and learning-rate schedules, chosen by name in the config."""

from typing import Any

import jax
import ml_collections
import optax

from gecko_jax.errors import UserError
from gecko_jax.training import param_groups


def learning_rate_schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup to the peak, then the configured decay to `end_lr_fraction`."""
    peak = opt.learning_rate
    end = peak * opt.end_lr_fraction
    warmup = min(opt.warmup_steps, total_steps)
    decay_steps = max(total_steps - warmup, 1)
    if opt.decay == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=opt.end_lr_fraction)
    elif opt.decay == "linear":
        decay = optax.linear_schedule(peak, end, decay_steps)
    elif opt.decay == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise UserError(f"optimizer.decay={opt.decay!r}; use cosine, linear or constant")
    warm = optax.linear_schedule(0.0, peak, warmup) if warmup else optax.constant_schedule(peak)
    return optax.join_schedules([warm, decay], [warmup])


def _decay_mask(params):
    # Biases, norm scales and other vectors are not decayed, as in BERT.
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def _base_optimizer(opt: ml_collections.ConfigDict, schedule: optax.Schedule):
    if opt.name == "adamw":
        return optax.adamw(
            schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay, mask=_decay_mask
        )
    if opt.name == "adafactor":
        return optax.adafactor(schedule, weight_decay_rate=opt.weight_decay or None)
    raise UserError(f"optimizer.name={opt.name!r}; use adamw or adafactor")


def _uses_groups(opt: ml_collections.ConfigDict) -> bool:
    return bool(opt.trainable or opt.frozen or opt.lr_multipliers)


def make_optimizer(opt: ml_collections.ConfigDict, total_steps: int, params=None):
    """Returns (optax transformation, schedule over train steps) for the run.

    With `grad_accum_steps` = k > 1 the optimizer applies one update every k
    train steps, with the mean of their gradients (optax.MultiSteps); the
    schedule advances once per update, and the returned schedule maps a train
    step to the learning rate in force at it. Each step's loss still sees only
    its own batch's negatives: to enlarge the contrastive batch itself, use
    GradCache.

    With parameter groups (see `param_groups`), frozen parameters get zero
    updates and no optimizer state, their gradients are left out of the
    clipping norm, and each learning-rate multiplier gets its own optimizer
    over a scaled schedule.

    Args:
      opt: the `optimizer` config section.
      total_steps: length of the schedule.
      params: the parameter tree (arrays or shapes), needed only when
        parameter groups are configured.
    """
    accum = opt.grad_accum_steps
    if accum < 1 or total_steps % accum:
        raise UserError(
            f"optimizer.grad_accum_steps={accum} must be >= 1 and divide total_steps={total_steps}"
        )
    schedule = learning_rate_schedule(opt, total_steps // accum)
    tx = _grouped_optimizer(opt, schedule, params)
    if accum == 1:
        return tx, schedule
    return optax.MultiSteps(tx, every_k_schedule=accum), lambda step: schedule(step // accum)


def frozen_mask(opt: ml_collections.ConfigDict, params) -> Any:
    """A tree like `params`, True where a parameter is frozen; None without parameter groups."""
    if not _uses_groups(opt):
        return None
    return _is_frozen(param_groups.group_labels(params, opt.trainable, opt.frozen, opt.lr_multipliers))


def _is_frozen(labels) -> Any:
    return jax.tree.map(lambda label: label == param_groups.FROZEN, labels)


def _grouped_optimizer(opt: ml_collections.ConfigDict, schedule: optax.Schedule, params):
    clip = [optax.clip_by_global_norm(opt.grad_clip_norm)] if opt.grad_clip_norm else []
    if not _uses_groups(opt):
        return optax.chain(*clip, _base_optimizer(opt, schedule))
    if params is None:
        raise ValueError("parameter groups need the parameter tree")

    labels = param_groups.group_labels(params, opt.trainable, opt.frozen, opt.lr_multipliers)
    is_frozen = _is_frozen(labels)

    def make(label):
        if label == param_groups.FROZEN:
            return optax.set_to_zero()
        factor = float(label)
        return _base_optimizer(opt, lambda step: factor * schedule(step))

    # multi_transform needs a transform for every label up front.
    groups = optax.multi_transform({label: make(label) for label in _label_universe(opt)}, labels)
    return optax.chain(optax.masked(optax.set_to_zero(), is_frozen), *clip, groups)


def _label_universe(opt: ml_collections.ConfigDict) -> list[str]:
    """Every label `group_labels` can produce for this config."""
    factors = {repr(1.0)} | {repr(f) for _, f in param_groups.parse_multipliers(opt.lr_multipliers) if f != 0}
    return [param_groups.FROZEN, *sorted(factors)]
