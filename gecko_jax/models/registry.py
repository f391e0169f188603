"""Builds an embedding tower from the `model` section of a config.

Fields of `config.model` (all backbones):
  name                    backbone kind, a key of `_BACKBONES` ('bert').
  vocab_size, hidden_size, num_layers, num_heads, intermediate_size,
  max_position_embeddings, type_vocab_size, layer_norm_eps,
  dropout_rate, attention_dropout_rate   backbone shape and regularisation.
  pooling                 'mean' | 'cls' | 'last'.
  projection_dim          width of a dense head after pooling; 0 = none.
  multi_vector_dim        width of per-token output vectors (XTR); 0 = one
                          pooled vector per text.
  salience_heads          AligneR's query and document salience heads on a
                          multi-vector tower (models.salience), with
  salience_query_fraction, salience_doc_fraction, salience_epsilon,
  salience_iterations     alpha^q, alpha^d, eps and the solver's iterations.
  normalize               L2-normalise the embeddings.
  dtype                   compute dtype, 'float32' | 'bfloat16'.
  attention_impl          'xla' | 'splash' (TPU) | 'cudnn' (NVIDIA GPU); see
                          `models.attention` (absent in older workdirs: 'xla').
  scan_layers             run the layers as one loop over stacked weights
                          (`models.layer_stack`); absent in older workdirs: False.
  remat, remat_policy     recompute layer activations in the backward pass,
                          keeping what the policy names (BERT: scanned only).
  init                    pretrained weights ('' | 'minilm' | 'st:PATH'); read
                          by the trainer through `bert_import`, not here.
  vocab                   vocabulary spec (`data.vocabularies`).

Fields read by 'gemma' only (see `models.gemma.GemmaConfig`):
  gemma_version, num_kv_heads, head_dim, query_pre_attn_scalar,
  sliding_window, sliding_window_pattern, rope_global_base, rope_local_base,
  rope_scaling_factor, attn_logit_softcap, final_logit_softcap, attention;
  layer_norm_eps is the RMSNorm epsilon and dropout_rate the residual dropout.
"""

from typing import Callable, Optional

import gin
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from gecko_jax.errors import UserError
from gecko_jax.models import attention
from gecko_jax.models import layer_stack
from gecko_jax.models import salience
from gecko_jax.models.bert import BertEncoder
from gecko_jax.models.gemma import Gemma, GemmaConfig
from gecko_jax.models.tower import POOLINGS, EmbeddingTower

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _dtype(name: str):
    if name not in _DTYPES:
        raise UserError(f"Unknown model.dtype {name!r}; use one of {sorted(_DTYPES)}.")
    return _DTYPES[name]


def _attention_impl(config: ml_collections.ConfigDict) -> str:
    return config.get("attention_impl", "xla")  # Absent in configs of older workdirs.


def _bert(config: ml_collections.ConfigDict) -> nn.Module:
    if config.get("remat", False) and not config.get("scan_layers", False):
        raise UserError(
            "BERT recomputes its layers only when they are scanned: set "
            "--config.model.scan_layers=True with --config.model.remat=True."
        )
    layer_stack.check_remat_policy(config.get("remat_policy", "full"))
    # A width that the heads do not divide is refused by the attention layer.
    attention.check_supported(
        _attention_impl(config),
        head_dim=config.hidden_size // max(config.num_heads, 1),
        dtype=_dtype(config.dtype),
        attention_dropout_rate=config.attention_dropout_rate,
    )
    return BertEncoder(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        layer_norm_eps=config.layer_norm_eps,
        dropout_rate=config.dropout_rate,
        attention_dropout_rate=config.attention_dropout_rate,
        dtype=_dtype(config.dtype),
        attention_impl=_attention_impl(config),
        scan_layers=config.get("scan_layers", False),
        remat=config.get("remat", False),
        remat_policy=config.get("remat_policy", "full"),
    )


def gemma_config(config: ml_collections.ConfigDict) -> GemmaConfig:
    """The `GemmaConfig` that a `config.model` section describes."""
    return GemmaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        num_kv_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        intermediate_size=config.intermediate_size,
        version=config.gemma_version,
        norm_eps=config.layer_norm_eps,
        query_pre_attn_scalar=config.query_pre_attn_scalar,
        sliding_window=config.sliding_window,
        sliding_window_pattern=config.sliding_window_pattern,
        rope_global_base=config.rope_global_base,
        rope_local_base=config.rope_local_base,
        rope_scaling_factor=config.rope_scaling_factor,
        attn_logit_softcap=config.attn_logit_softcap,
        final_logit_softcap=config.final_logit_softcap,
        attention=config.attention,
        dropout_rate=config.dropout_rate,
        dtype=_dtype(config.dtype),
        remat=config.get("remat", False),  # Absent in configs of older workdirs.
        remat_policy=config.get("remat_policy", "full"),
        scan_layers=config.get("scan_layers", False),
        attention_impl=_attention_impl(config),
    )


def _gemma(config: ml_collections.ConfigDict) -> nn.Module:
    return Gemma(gemma_config(config))


# Backbone name -> builder from `config.model`.
_BACKBONES: dict[str, Callable[[ml_collections.ConfigDict], nn.Module]] = {
    "bert": _bert,
    "gemma": _gemma,
}


@gin.configurable(denylist=["model_config"])
def build_tower(
    model_config: ml_collections.ConfigDict,
    backbone_builder: Optional[Callable[[ml_collections.ConfigDict], nn.Module]] = None,
) -> EmbeddingTower:
    """Returns the (unbound) tower that `model_config` describes.

    Args:
      model_config: the `model` section of a config; see the module docstring.
      backbone_builder: set through gin (`build_tower.backbone_builder =
        @my_backbone`) to use a backbone class not registered here; it
        receives `model_config` and returns a module with the backbone call
        signature `(input_ids, attention_mask, deterministic) -> [B, L, H]`.

    Returns:
      An `EmbeddingTower` whose backbone is chosen by `model_config.name`.

    Raises:
      UserError: unknown backbone name, pooling or dtype, a pooled-vector
        head on a multi-vector tower, or salience heads on a pooled one.
    """
    builder = backbone_builder or _BACKBONES.get(model_config.name)
    if builder is None:
        raise UserError(f"Unknown model.name {model_config.name!r}; use one of {sorted(_BACKBONES)}.")
    if model_config.pooling not in POOLINGS:
        raise UserError(f"Unknown model.pooling {model_config.pooling!r}; use one of {POOLINGS}.")
    multi_vector_dim = model_config.get("multi_vector_dim", 0)  # Absent in older workdirs.
    if multi_vector_dim and model_config.projection_dim:
        raise UserError(
            f"model.projection_dim={model_config.projection_dim} is a head on the "
            f"pooled vector, which a multi-vector tower (model.multi_vector_dim="
            f"{multi_vector_dim}) does not have; set one of them to 0"
        )
    return EmbeddingTower(
        backbone=builder(model_config),
        pooling=model_config.pooling,
        projection_dim=model_config.projection_dim,
        normalize=model_config.normalize,
        multi_vector_dim=multi_vector_dim,
        saliences=_salience_heads(model_config, multi_vector_dim),
    )


def _salience_heads(
    model_config: ml_collections.ConfigDict, multi_vector_dim: int
) -> salience.SalienceHeads | None:
    """AligneR's salience heads where `model.salience_heads` asks for them."""
    if not model_config.get("salience_heads", False):  # Absent in older workdirs.
        return None
    if not multi_vector_dim:
        raise UserError(
            "model.salience_heads weigh token vectors; set "
            "--config.model.multi_vector_dim (e.g. 128) for a multi-vector tower"
        )
    for field in ("salience_query_fraction", "salience_doc_fraction"):
        if not 0 < model_config[field] <= 1:
            raise UserError(
                f"--config.model.{field}={model_config[field]!r} is out of range; use a fraction in (0, 1]"
            )
    if not model_config.salience_epsilon > 0 or model_config.salience_iterations < 1:
        raise UserError(
            "model.salience_epsilon must be above 0 and model.salience_iterations "
            f"at least 1; got {model_config.salience_epsilon!r} and "
            f"{model_config.salience_iterations!r}"
        )
    return salience.SalienceHeads(
        query_fraction=model_config.salience_query_fraction,
        doc_fraction=model_config.salience_doc_fraction,
        epsilon=model_config.salience_epsilon,
        iterations=model_config.salience_iterations,
    )
