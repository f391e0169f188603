"""A tiny tower, a random batch and the plain step GradCache must reproduce."""

import jax
import numpy as np
from flax import linen as nn

from gecko_jax.losses.registry import build_loss
from gecko_jax.models.registry import build_tower
from gecko_jax.training.train_step import encode_batch

BATCH = 16


def setup(config, lengths):
    """Builds the tower and loss of `config` with a random batch and initial parameters.

    Args:
      config: a full config whose model and loss sections are used.
      lengths: field ('query', 'positive', 'negative') -> token length of its texts.

    Returns:
      (model, params, batch, loss_fn); each text has 2 to its field's length
      real tokens, and `has_negative` is random.
    """
    model = build_tower(config.model)
    vocab_size = config.model.vocab_size
    rng = np.random.default_rng(0)
    batch = {}
    for field, length in lengths.items():
        text_lengths = rng.integers(2, length + 1, size=BATCH)
        mask = (np.arange(length)[None] < text_lengths[:, None]).astype(np.int32)
        batch[f"{field}_ids"] = (rng.integers(1, vocab_size, size=(BATCH, length)) * mask).astype(np.int32)
        batch[f"{field}_mask"] = mask
    batch["has_negative"] = rng.integers(0, 2, size=BATCH).astype(np.int32)
    params = nn.unbox(
        model.init(jax.random.key(1), batch["positive_ids"][:1], batch["positive_mask"][:1])["params"]
    )
    return model, params, batch, build_loss(config.loss)


def plain_value_and_grad(model, params, batch, loss_fn):
    """The loss and gradients of the whole batch in one pass, without GradCache."""

    def loss(p):
        return loss_fn(encode_batch(model, p, batch, deterministic=True), batch)

    return jax.value_and_grad(loss)(params)


def assert_same(a, b, loss_rtol, grad_rtol):
    """Asserts two (loss, grads) pairs agree within the given relative tolerances."""
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    np.testing.assert_allclose(float(loss_a), float(loss_b), rtol=loss_rtol)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=grad_rtol, atol=1e-6), grads_a, grads_b)
