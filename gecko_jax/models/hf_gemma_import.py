"""Imports Gemma, Gemma 2, Gemma 3 and EmbeddingGemma safetensors folders.

An HF folder holds `config.json` (model_type 'gemma', 'gemma2',
'gemma3_text', or 'gemma3' with a `text_config`), `model.safetensors` (or
shards listed in `model.safetensors.index.json`) and the SentencePiece
`tokenizer.model`. An EmbeddingGemma folder is a sentence-transformers folder
around such a Gemma 3 text backbone: `modules.json` lists Transformer ->
Pooling -> Dense (768->3072) -> Dense (3072->768) -> Normalize. The two dense
layers are linear and bias-free, so their product is one [H, D] projection,
which is what the tower's projection head holds.

Gemma 1 names its pre-MLP norm `post_attention_layernorm`; Gemma 2 and 3 use
that name for the norm after attention and `pre_feedforward_layernorm` for
the pre-MLP one.
"""

import json
import os
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from gecko_jax.errors import UserError
from gecko_jax.models.gemma import GemmaConfig
from gecko_jax.models.gemma_checkpoint import DEFAULT_MAX_LENGTH, GemmaCheckpoint, gemma_params

_VERSIONS = {"gemma": 1, "gemma2": 2, "gemma3_text": 3}
# Prefixes of the text backbone in the classes transformers saves.
_PREFIXES = ("model.language_model.", "language_model.model.", "model.", "")
_ACTIVATIONS = ("gelu_pytorch_tanh", "gelu_tanh", "gelu")
_ST_POOLINGS = {"mean": "mean", "cls": "cls", "lasttoken": "last"}


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise UserError(f"{path} not found; an HF Gemma folder needs it.") from e
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}).") from e


def _load_weights(folder: str) -> dict[str, np.ndarray]:
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        files = sorted(set(_read_json(index)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    weights = {}
    for name in files:
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            raise UserError(
                f"{path} not found; re-save the model with save_pretrained(..., safe_serialization=True)."
            )
        weights.update(load_file(path))
    return weights


def _window_pattern(layer_types: list[str], folder: str) -> int:
    """The N with layer i global iff (i + 1) % N == 0."""
    is_global = [t == "full_attention" for t in layer_types]
    if all(is_global):
        return 1
    first = is_global.index(True) + 1 if any(is_global) else len(is_global) + 1
    if is_global != [(i + 1) % first == 0 for i in range(len(is_global))]:
        raise UserError(
            f"{folder}: layer_types {layer_types} do not repeat "
            "one local/global pattern; this is not supported."
        )
    return first


def _rope_bases(hf: dict[str, Any]) -> tuple[float, float, float]:
    """(global base, local base, global linear scaling factor)."""
    params = hf.get("rope_parameters") or {}
    full = params.get("full_attention", params)
    local = params.get("sliding_attention", {})
    global_base = full.get("rope_theta", hf.get("rope_theta", 10_000.0))
    local_base = local.get("rope_theta", hf.get("rope_local_base_freq", global_base))
    scaling = hf.get("rope_scaling") or full
    factor = scaling.get("factor", 1.0) if scaling.get("rope_type") == "linear" else 1.0
    if scaling.get("rope_type", "default") not in ("default", "linear"):
        raise UserError(f"RoPE type {scaling['rope_type']!r} is not supported; only default and linear.")
    return float(global_base), float(local_base), float(factor)


def hf_config(hf: dict[str, Any], folder: str) -> GemmaConfig:
    """The `GemmaConfig` (causal) of an HF Gemma config.json."""
    if hf.get("model_type") == "gemma3" and "text_config" in hf:
        hf = {**hf["text_config"], "model_type": "gemma3_text"}
    version = _VERSIONS.get(hf.get("model_type"))
    if version is None:
        raise UserError(
            f"{folder}: model_type {hf.get('model_type')!r} is not a Gemma; use one of {sorted(_VERSIONS)}."
        )
    activation = hf.get("hidden_activation") or hf.get("hidden_act")
    if activation not in _ACTIVATIONS:
        raise UserError(f"{folder}: activation {activation!r} is not GeGLU.")
    layers = hf["num_hidden_layers"]
    window = hf.get("sliding_window") or 0
    layer_types = hf.get("layer_types") or ["full_attention"] * layers
    if version == 1:
        window = 0
    if window and hf.get("use_bidirectional_attention"):
        # transformers reads a bidirectional config's window W as |i - j| <
        # W // 2 + 1 (EmbeddingGemma's 512 spans 256 tokens each way).
        window = window // 2 + 1
    global_base, local_base, factor = _rope_bases(hf)
    heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    return GemmaConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads", heads),
        head_dim=head_dim,
        intermediate_size=hf["intermediate_size"],
        version=version,
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        query_pre_attn_scalar=hf.get("query_pre_attn_scalar") or head_dim,
        sliding_window=window,
        sliding_window_pattern=_window_pattern(layer_types, folder) if window else 1,
        rope_global_base=global_base,
        rope_local_base=local_base,
        rope_scaling_factor=factor,
        attn_logit_softcap=hf.get("attn_logit_softcapping") or 0.0,
        final_logit_softcap=hf.get("final_logit_softcapping") or 0.0,
    )


# transformers' tensor names (after the model prefix), by role (see
# `gemma_checkpoint.gemma_params`).
_HF_NAMES = {
    "embedding": "embed_tokens.weight",
    "final_norm": "norm",
    "q": "layers.{i}.self_attn.q_proj.weight",
    "k": "layers.{i}.self_attn.k_proj.weight",
    "v": "layers.{i}.self_attn.v_proj.weight",
    "out": "layers.{i}.self_attn.o_proj.weight",
    "q_norm": "layers.{i}.self_attn.q_norm",
    "k_norm": "layers.{i}.self_attn.k_norm",
    "pre_attention_norm": "layers.{i}.input_layernorm",
    "post_attention_norm": "layers.{i}.post_attention_layernorm",
    "pre_mlp_norm": "layers.{i}.pre_feedforward_layernorm",
    "post_mlp_norm": "layers.{i}.post_feedforward_layernorm",
    "gate": "layers.{i}.mlp.gate_proj.weight",
    "up": "layers.{i}.mlp.up_proj.weight",
    "down": "layers.{i}.mlp.down_proj.weight",
}


def _convert(weights: dict[str, np.ndarray], config: GemmaConfig, folder: str) -> dict[str, Any]:
    prefix = next((p for p in _PREFIXES if f"{p}embed_tokens.weight" in weights), None)
    if prefix is None:
        raise UserError(f"{folder}: no embed_tokens.weight; is this a Gemma checkpoint?")

    def get(name):
        key = prefix + name
        if key not in weights:
            raise UserError(f"{folder}: tensor {key!r} is missing.")
        return np.asarray(weights[key], np.float32)

    def norm(name):
        return {"scale": get(f"{name}.weight")}

    names = dict(_HF_NAMES)
    if config.version == 1:
        # Gemma 1 has no post-norms; its one MLP norm carries this name.
        names["pre_mlp_norm"] = "layers.{i}.post_attention_layernorm"
    return gemma_params(config, get, norm, names)


def _dense(folder: str) -> np.ndarray:
    """A bias-free linear sentence-transformers Dense module as [in, out]."""
    config = _read_json(os.path.join(folder, "config.json"))
    activation = config.get("activation_function", "Tanh")
    if config.get("bias", True) or not activation.endswith("Identity"):
        raise UserError(
            f"{folder}: only Dense heads with bias=false and an Identity activation are supported."
        )
    return np.asarray(load_file(os.path.join(folder, "model.safetensors"))["linear.weight"], np.float32).T


def _sentence_transformers_head(path: str, modules: list[dict[str, Any]]) -> tuple[str, Any, bool, str, int]:
    """(backbone folder, projection, normalize, pooling, max_length)."""
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    folders = [os.path.join(path, m["path"]) for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or set(kinds[2:]) - {"Dense", "Normalize"}:
        raise UserError(
            f"{path}: modules {kinds} are not supported; expected "
            "Transformer, Pooling, [Dense...], [Normalize]."
        )
    pooling_config = _read_json(os.path.join(folders[1], "config.json"))
    mode = pooling_config.get("pooling_mode")
    if mode is None:
        mode = next(
            (
                k[len("pooling_mode_") :]
                for k, on in pooling_config.items()
                if k.startswith("pooling_mode_") and on
            ),
            "mean_tokens",
        )
        mode = {"mean_tokens": "mean", "cls_token": "cls"}.get(mode, mode)
    if mode not in _ST_POOLINGS:
        raise UserError(f"{folders[1]}: pooling {mode!r} is not supported.")
    projection = None
    for kind, folder in zip(kinds, folders):
        if kind == "Dense":
            kernel = _dense(folder)
            projection = kernel if projection is None else projection @ kernel
    st_path = os.path.join(folders[0], "sentence_bert_config.json")
    max_length = (
        _read_json(st_path).get("max_seq_length") if os.path.exists(st_path) else None
    ) or DEFAULT_MAX_LENGTH
    return (folders[0], projection, "Normalize" in kinds, _ST_POOLINGS[mode], int(max_length))


def _vocab_spec(backbone: str) -> str:
    """The folder's SentencePiece model, else a WordPiece vocabulary that an
    export of a Gemma tower trained on one (`export.tokenizer_files`) holds."""
    for name, kind in (("tokenizer.model", "sentencepiece"), ("vocab.txt", "wordpiece")):
        if os.path.exists(os.path.join(backbone, name)):
            return f"{kind}:{os.path.join(backbone, name)}"
    raise UserError(
        f"{backbone} has no tokenizer.model; copy the "
        "SentencePiece model of the checkpoint beside config.json."
    )


def load_hf_folder(path: str) -> GemmaCheckpoint:
    """Imports an HF Gemma folder or a sentence-transformers EmbeddingGemma.

    Args:
      path: the folder.

    Returns:
      The `GemmaCheckpoint`; its vocabulary is the folder's tokenizer.model.

    Raises:
      UserError: missing files or an unsupported architecture.
    """
    if not os.path.isdir(path):
        raise UserError(f"{path} is not a directory; pass an HF Gemma folder.")
    backbone, projection, normalize, pooling = path, None, True, "mean"
    max_length = DEFAULT_MAX_LENGTH
    modules_path = os.path.join(path, "modules.json")
    if os.path.exists(modules_path):
        backbone, projection, normalize, pooling, max_length = _sentence_transformers_head(
            path, _read_json(modules_path)
        )
    config = hf_config(_read_json(os.path.join(backbone, "config.json")), backbone)
    return GemmaCheckpoint(
        config=config,
        params=_convert(_load_weights(backbone), config, backbone),
        vocab=_vocab_spec(backbone),
        spec=f"hf:{path}",
        projection=projection,
        normalize=normalize,
        pooling=pooling,
        max_length=max_length,
    )
