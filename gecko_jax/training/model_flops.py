"""The model FLOPs of a train step, from the real (non-padding) tokens of its batch.

MFU counts the work the model needs, not what the compiled program happens to
do: XLA's count includes padding tokens, layers recomputed by remat and
GradCache's second forward pass, and is reported as HFU (hardware FLOPs
utilisation) beside it. The count is the usual one for transformers (Kaplan
et al., arXiv 2001.08361, section 2.1; as MaxText and Levanter log it):

* every matmul weight does 2 FLOPs per multiply-add in the forward pass and
  twice that in the backward pass, so 6 FLOPs per parameter per token; the
  embedding tables are lookups and cost nothing, and the projection head
  works once per text on the pooled vector;
* attention adds, per layer and per token, the query-key scores and the
  weighted sum of values: 2 matmuls of `heads * head_dim` over the tokens the
  token sees (the whole text, or the sliding window of a local layer), times
  2 FLOPs per multiply-add and 3 for forward and backward.

A text that is all padding (a missing hard negative) costs nothing.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import traverse_util

from gecko_jax.models.registry import gemma_config

# Run once per text, on the pooled vector, rather than once per token.
_PER_TEXT_MODULES = ("projection",)


@dataclasses.dataclass(frozen=True)
class ModelFlops:
    """Counts a tower's training FLOPs for batches of texts.

    Attributes:
      token_params: matmul weights applied to every token.
      text_params: matmul weights applied once per text (the projection head).
      attention_width: query heads * head dim.
      context_windows: per layer, the sliding window a token attends within,
        or 0 for the whole text.
    """

    token_params: int
    text_params: int
    attention_width: int
    context_windows: tuple[int, ...]

    def of_texts(self, mask: jax.Array) -> jax.Array:
        """The FLOPs of forward and backward passes over texts with `mask` [rows, L] (1 = token)."""
        lengths = jnp.sum(mask, axis=1).astype(jnp.float32)
        texts = jnp.sum(lengths > 0).astype(jnp.float32)
        linear = 6.0 * (self.token_params * jnp.sum(lengths) + self.text_params * texts)
        attended = 0.0
        for window in self.context_windows:
            context = jnp.minimum(lengths, window) if window else lengths
            attended = attended + jnp.sum(lengths * context)
        return linear + 12.0 * self.attention_width * attended


def model_flops(model_config: ml_collections.ConfigDict, param_shapes) -> ModelFlops:
    """The ModelFlops of the tower `model_config` describes, with parameters `param_shapes`."""
    token_params = text_params = 0
    for path, leaf in traverse_util.flatten_dict(param_shapes).items():
        if path[-1] != "kernel" and not path[-1].endswith("_kernel"):
            continue  # Embedding tables, norms and biases do no matmul.
        if path[0] in _PER_TEXT_MODULES:
            text_params += math.prod(leaf.shape)
        else:
            token_params += math.prod(leaf.shape)
    layers = model_config.num_layers
    if model_config.name == "gemma":
        gemma = gemma_config(model_config)
        width = gemma.num_heads * gemma.head_dim
        windows = tuple(gemma.sliding_window if gemma.is_local(i) else 0 for i in range(layers))
    else:
        width = model_config.hidden_size
        windows = (0,) * layers
    return ModelFlops(token_params, text_params, width, windows)
