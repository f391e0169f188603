"""Optimizers and learning-rate schedules, chosen by name in the config."""

import jax
import ml_collections
import optax

from gecko_jax.errors import UserError


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


def make_optimizer(opt: ml_collections.ConfigDict, total_steps: int):
    """Returns (optax transformation, schedule) for the run."""
    schedule = learning_rate_schedule(opt, total_steps)
    if opt.name == "adamw":
        core = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                           weight_decay=opt.weight_decay, mask=_decay_mask)
    elif opt.name == "adafactor":
        core = optax.adafactor(schedule, weight_decay_rate=opt.weight_decay or None)
    else:
        raise UserError(f"optimizer.name={opt.name!r}; use adamw or adafactor")
    if opt.grad_clip_norm:
        return optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), core), schedule
    return core, schedule
