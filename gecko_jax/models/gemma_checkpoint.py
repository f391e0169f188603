"""What every Gemma importer returns: a `GemmaCheckpoint`.

The importers (`gguf_import` for GGUF files, `hf_gemma_import` for
safetensors folders) differ only in tensor names and in how a norm's gain is
stored; `gemma_params` builds the `Gemma` parameter tree from either.
"""

import dataclasses
from typing import Any, Optional

import numpy as np

from gecko_jax.models.gemma import GemmaConfig

# The spec of Gemma 3 270M from its weights package (`pretrained_packages`).
GEMMA3_270M = "gemma3-270m"
# Sequence length used for embedding towers (bos and eos included): what
# EmbeddingGemma is trained with, far below the context the LMs support.
DEFAULT_MAX_LENGTH = 2048


@dataclasses.dataclass(frozen=True)
class GemmaCheckpoint:
    """A pretrained Gemma model.

    Attributes:
      config: the architecture (attention mode 'causal').
      params: float32 numpy tree of `Gemma(config)` parameters.
      vocab: vocabulary spec of its tokenizer (`data.vocabularies`).
      spec: the model spec it was loaded from ('gguf:PATH', 'hf:PATH', ...).
      projection: [H, D] kernel of an embedding head (EmbeddingGemma's dense
        layers, composed), or None.
      normalize: whether the embedding model L2-normalises its output.
      pooling: tower pooling of an embedding model ('mean' by default).
      max_length: tokens per text for an embedding tower.
    """

    config: GemmaConfig
    params: dict[str, Any]
    vocab: str
    spec: str
    projection: Optional[np.ndarray] = None
    normalize: bool = True
    pooling: str = "mean"
    max_length: int = DEFAULT_MAX_LENGTH


def gemma_params(config: GemmaConfig, tensor, norm, names: dict[str, str]) -> dict[str, Any]:
    """The `Gemma` parameter tree from a checkpoint's named tensors.

    Checkpoint formats differ only in tensor names (and in how a norm's gain
    is stored), so each importer passes its names and readers here.

    Args:
      config: the architecture.
      tensor: name -> float32 array, a [out, in] matrix for linear layers.
      norm: name -> {"scale": ...} for an RMSNorm.
      names: templates by role, layer ones with `{i}`: 'embedding',
        'final_norm', 'q', 'k', 'v', 'out', 'gate', 'up', 'down',
        'pre_attention_norm', 'pre_mlp_norm', 'q_norm' / 'k_norm' (read on
        Gemma 3) and 'post_attention_norm' / 'post_mlp_norm' (Gemma 2 and 3).

    Returns:
      The parameter tree.
    """
    hidden, heads, kv_heads, head_dim = (
        config.hidden_size,
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
    )
    params = {"embedder": {"embedding": tensor(names["embedding"])}, "final_norm": norm(names["final_norm"])}
    for i in range(config.num_layers):

        def layer_tensor(role, i=i):
            return tensor(names[role].format(i=i))

        def layer_norm(role, i=i):
            return norm(names[role].format(i=i))

        attention = {
            "q_kernel": layer_tensor("q").T.reshape(hidden, heads, head_dim),
            "k_kernel": layer_tensor("k").T.reshape(hidden, kv_heads, head_dim),
            "v_kernel": layer_tensor("v").T.reshape(hidden, kv_heads, head_dim),
            "out_kernel": layer_tensor("out").T.reshape(heads, head_dim, hidden),
        }
        if config.version == 3:
            attention["q_norm"] = layer_norm("q_norm")
            attention["k_norm"] = layer_norm("k_norm")
        layer = {
            "pre_attention_norm": layer_norm("pre_attention_norm"),
            "attention": attention,
            "pre_mlp_norm": layer_norm("pre_mlp_norm"),
            "mlp": {
                "gate_kernel": layer_tensor("gate").T,
                "up_kernel": layer_tensor("up").T,
                "down_kernel": layer_tensor("down").T,
            },
        }
        if config.version >= 2:
            layer["post_attention_norm"] = layer_norm("post_attention_norm")
            layer["post_mlp_norm"] = layer_norm("post_mlp_norm")
        params[f"layers_{i}"] = layer
    return params
