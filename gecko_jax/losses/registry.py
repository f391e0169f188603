"""Losses chosen by `loss.name`; gin may swap in any function of the same shape.

A training loss maps (embeddings by text field, batch) to a scalar, where the
embeddings are [global_batch, D] and the batch holds the token arrays and
flags (`has_negative`) of the same examples.
"""

from typing import Callable, Optional

import gin
import jax
import ml_collections

from gecko_jax.errors import UserError
from gecko_jax.losses.gecko import matryoshka_gecko_loss

LossFn = Callable[[dict, dict], jax.Array]


def _gecko(loss_config: ml_collections.ConfigDict) -> LossFn:
    def loss_fn(embeddings: dict, batch: dict) -> jax.Array:
        return matryoshka_gecko_loss(
            embeddings["query"], embeddings["positive"], embeddings["negative"],
            batch.get("has_negative"), dims=loss_config.mrl_dims,
            weights=loss_config.mrl_weights or None, temperature=loss_config.temperature,
            same_tower=loss_config.same_tower)
    return loss_fn


LOSSES: dict[str, Callable[[ml_collections.ConfigDict], LossFn]] = {
    "gecko": _gecko,
}


@gin.configurable(denylist=["loss_config"])
def build_loss(loss_config: ml_collections.ConfigDict,
               builder: Optional[Callable[[ml_collections.ConfigDict], LossFn]] = None) -> LossFn:
    """The loss named by `loss_config.name`, or a gin-bound `builder` instead.

    Args:
      loss_config: the `loss` section of the run config.
      builder: set through gin (`build_loss.builder = @my_loss_builder`) to use
        a loss that is not registered here; it receives `loss_config`.

    Returns:
      The loss function.
    """
    if builder is not None:
        return builder(loss_config)
    if loss_config.name not in LOSSES:
        raise UserError(f"loss.name={loss_config.name!r} is unknown; use one of {sorted(LOSSES)}")
    return LOSSES[loss_config.name](loss_config)
