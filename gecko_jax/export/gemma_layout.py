"""Our Gemma 3 backbone as an HF `Gemma3TextModel`, EmbeddingGemma's backbone.

The inverse of `models.hf_gemma_import` for Gemma 3. Two conventions need
care:

- transformers reads the `sliding_window` W of a bidirectional Gemma 3
  config as "attend where |i - j| < W // 2 + 1"; ours is "|i - j| < window",
  so a bidirectional tower is written with W = 2 * (window - 1).
- RMSNorm weights are stored as the offset from 1 on both sides, so they are
  copied unchanged.
"""

from typing import Any

import ml_collections
import numpy as np

from gecko_jax.errors import UserError
from gecko_jax.export import torch_linear

# transformers' default window, written when no layer is local (it is unused).
_UNUSED_WINDOW = 4096


def check_exportable(model: ml_collections.ConfigDict) -> None:
    """Raises UserError unless the Gemma tower has an EmbeddingGemma layout."""
    if model.gemma_version != 3:
        raise UserError(
            f"Gemma {model.gemma_version} towers cannot be exported; "
            "the sentence-transformers layout (EmbeddingGemma's) is "
            "Gemma 3 only."
        )
    if model.attn_logit_softcap:
        raise UserError(
            "model.attn_logit_softcap is set, which Gemma 3 in "
            "transformers does not apply; export needs it 0."
        )


def gemma_tensors(backbone: dict[str, Any], num_layers: int) -> dict[str, np.ndarray]:
    """HF `Gemma3TextModel` tensors of a Gemma 3 parameter tree.

    Args:
      backbone: the tower's 'backbone' parameters.
      num_layers: transformer layers.

    Returns:
      Name -> float32 array, as `Gemma3TextModel.save_pretrained` names them.
    """
    tensors = {
        "embed_tokens.weight": backbone["embedder"]["embedding"],
        "norm.weight": backbone["final_norm"]["scale"],
    }
    for i in range(num_layers):
        layer = backbone[f"layers_{i}"]
        prefix = f"layers.{i}"
        attention = layer["attention"]
        for ours, theirs in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj")):
            tensors[f"{prefix}.self_attn.{theirs}.weight"] = torch_linear.in_projection(
                attention[f"{ours}_kernel"]
            )
        tensors[f"{prefix}.self_attn.o_proj.weight"] = torch_linear.out_projection(attention["out_kernel"])
        tensors[f"{prefix}.self_attn.q_norm.weight"] = attention["q_norm"]["scale"]
        tensors[f"{prefix}.self_attn.k_norm.weight"] = attention["k_norm"]["scale"]
        for ours, theirs in (
            ("pre_attention_norm", "input_layernorm"),
            ("post_attention_norm", "post_attention_layernorm"),
            ("pre_mlp_norm", "pre_feedforward_layernorm"),
            ("post_mlp_norm", "post_feedforward_layernorm"),
        ):
            tensors[f"{prefix}.{theirs}.weight"] = layer[ours]["scale"]
        for ours, theirs in (
            ("gate_kernel", "gate_proj"),
            ("up_kernel", "up_proj"),
            ("down_kernel", "down_proj"),
        ):
            tensors[f"{prefix}.mlp.{theirs}.weight"] = torch_linear.in_projection(layer["mlp"][ours])
    return {name: np.ascontiguousarray(value, np.float32) for name, value in tensors.items()}


def _rope_parameters(model: ml_collections.ConfigDict) -> dict[str, Any]:
    full = {"rope_type": "default", "rope_theta": model.rope_global_base}
    if model.rope_scaling_factor != 1.0:
        full = {
            "rope_type": "linear",
            "rope_theta": model.rope_global_base,
            "factor": model.rope_scaling_factor,
        }
    return {
        "full_attention": full,
        "sliding_attention": {"rope_type": "default", "rope_theta": model.rope_local_base},
    }


def gemma_hf_config(
    model: ml_collections.ConfigDict, max_length: int, special_ids: dict[str, int]
) -> dict[str, Any]:
    """The HF `Gemma3TextConfig` (config.json) of a `config.model` section.

    Args:
      model: a Gemma 3 `config.model` section (see `check_exportable`).
      max_length: tokens per text the tower is used with.
      special_ids: 'pad', 'bos' and 'eos' token ids of its vocabulary.

    Returns:
      The config as a JSON-ready dict.
    """
    bidirectional = model.attention == "bidirectional"
    window = model.sliding_window
    layer_types = [
        "sliding_attention" if window and (i + 1) % model.sliding_window_pattern else "full_attention"
        for i in range(model.num_layers)
    ]
    if not window:
        written_window = _UNUSED_WINDOW
    else:
        written_window = 2 * (window - 1) if bidirectional else window
    scalar = model.query_pre_attn_scalar or model.head_dim
    return {
        "architectures": ["Gemma3TextModel"],
        "model_type": "gemma3_text",
        "vocab_size": model.vocab_size,
        "hidden_size": model.hidden_size,
        "intermediate_size": model.intermediate_size,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads,
        "num_key_value_heads": model.num_kv_heads,
        "head_dim": model.head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": model.layer_norm_eps,
        "query_pre_attn_scalar": int(scalar) if float(scalar).is_integer() else scalar,
        "sliding_window": written_window,
        "layer_types": layer_types,
        "rope_parameters": _rope_parameters(model),
        "use_bidirectional_attention": bidirectional,
        "max_position_embeddings": max(model.max_position_embeddings, max_length),
        "attention_bias": False,
        "pad_token_id": special_ids["pad"],
        "bos_token_id": special_ids["bos"],
        "eos_token_id": special_ids["eos"],
        "dtype": "float32",
    }
