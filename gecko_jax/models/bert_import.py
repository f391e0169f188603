"""Imports BERT weights from sentence-transformers and plain HF folders.

A sentence-transformers folder lists its modules in `modules.json`:
Transformer -> Pooling -> optional Dense -> optional Normalize, which map onto
`EmbeddingTower`'s backbone, `pooling`, `projection_dim` and `normalize`. Both
the pre-v3 layout (`sentence_bert_config.json` with `max_seq_length`, boolean
`pooling_mode_*` keys) and the current one (`pooling_mode` string,
`model_max_length` in `tokenizer_config.json`) are read. A plain HF BERT folder
(`config.json`, `model.safetensors`, `vocab.txt` or `tokenizer.json`) gets what
sentence-transformers would give it: mean pooling, no normalisation.
"""

import dataclasses
import json
import logging
import os
from typing import Any

import ml_collections
import numpy as np
from flax import traverse_util
from flax.core import meta
from safetensors.numpy import load_file

from gecko_jax.errors import UserError
from gecko_jax.pretrained_packages import minilm_folder

# HF tensors we do not use: the NSP pooler, MLM/NSP heads, a buffer.
_IGNORED_PREFIXES = ("pooler.", "cls.", "embeddings.position_ids")
_ST_POOLINGS = {"mean": "mean", "cls": "cls", "lasttoken": "last"}
# tokenizer_config.json uses a huge number for "no limit".
_NO_LIMIT = 1_000_000


@dataclasses.dataclass(frozen=True)
class ImportedModel:
    """A pretrained tower ready for `build_tower(model_config)`.

    Attributes:
      model_config: the `model` config section (fields of `models.registry`).
      params: float32 numpy tree equal in structure to the unboxed
        `build_tower(model_config).init(...)['params']`.
      max_length: the sequence length the model was trained with (bos and eos
        included).
    """

    model_config: ml_collections.ConfigDict
    params: dict[str, Any]
    max_length: int


def _read_json(path: str, what: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise UserError(f"{path} not found: {what}") from e
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); re-save the model.") from e


def _module_kind(module: dict[str, Any]) -> str:
    # 'sentence_transformers.models.Pooling' and
    # 'sentence_transformers.sentence_transformer.modules.pooling.Pooling' alike.
    return module["type"].rsplit(".", 1)[-1]


def _pooling_mode(config: dict[str, Any], path: str) -> str:
    """The tower pooling for an ST Pooling config, old or new layout."""
    if not config.get("include_prompt", True):
        raise UserError(
            f"{path}: pooling that excludes the prompt is not supported; set include_prompt to true."
        )
    if "pooling_mode" in config:
        modes = config["pooling_mode"]
        modes = [modes] if isinstance(modes, str) else list(modes)
    else:
        modes = [
            key[len("pooling_mode_") :]
            for key, on in config.items()
            if key.startswith("pooling_mode_") and on
        ]
        modes = [{"cls_token": "cls", "mean_tokens": "mean"}.get(m, m) for m in modes]
    if len(modes) != 1 or modes[0] not in _ST_POOLINGS:
        raise UserError(f"{path}: pooling {modes} is not supported; use one of {sorted(_ST_POOLINGS)}.")
    return _ST_POOLINGS[modes[0]]


def _dense_head(folder: str) -> np.ndarray:
    """Reads an ST Dense module as a [in, out] kernel (bias-free, linear only)."""
    config = _read_json(os.path.join(folder, "config.json"), "a Dense module needs it.")
    # sentence-transformers' default activation is Tanh.
    activation = config.get("activation_function", "Tanh")
    if config.get("bias", True) or not activation.endswith("Identity"):
        raise UserError(
            f"{folder}: only Dense heads with bias=false and an Identity activation are supported."
        )
    weights = _load_safetensors(folder)
    return np.asarray(weights["linear.weight"], np.float32).T


def _load_safetensors(folder: str) -> dict[str, np.ndarray]:
    path = os.path.join(folder, "model.safetensors")
    if not os.path.exists(path):
        hint = (
            " Only pytorch_model.bin is there: re-save it with save_pretrained(..., safe_serialization=True)."
            if os.path.exists(os.path.join(folder, "pytorch_model.bin"))
            else ""
        )
        raise UserError(f"{path} not found.{hint}")
    return load_file(path)


def _check_architecture(config: dict[str, Any], folder: str) -> None:
    problems = []
    if config.get("model_type") != "bert":
        problems.append(f"model_type {config.get('model_type')!r} is not 'bert'")
    if config.get("position_embedding_type", "absolute") != "absolute":
        problems.append("position embeddings are not absolute")
    if config.get("hidden_act", "gelu") != "gelu":
        problems.append(f"hidden_act {config.get('hidden_act')!r} is not 'gelu'")
    if problems:
        raise UserError(f"{folder} is not a supported BERT model: " + "; ".join(problems) + ".")


def _convert_bert(weights: dict[str, np.ndarray], hf: dict[str, Any]) -> dict[str, Any]:
    """Maps HF BertModel tensors onto the `BertEncoder` parameter tree."""
    weights = {k.removeprefix("bert."): v for k, v in weights.items()}
    used = set()

    def get(name):
        candidates = [name]
        # Checkpoints from the TF era name LayerNorm parameters gamma/beta.
        if name.endswith("LayerNorm.weight"):
            candidates.append(name.replace(".weight", ".gamma"))
        if name.endswith("LayerNorm.bias"):
            candidates.append(name.replace(".bias", ".beta"))
        for key in candidates:
            if key in weights:
                used.add(key)
                return np.asarray(weights[key], np.float32)
        raise UserError(f"model.safetensors has no tensor {name!r}; is this a BertModel checkpoint?")

    def norm(prefix):
        return {"scale": get(f"{prefix}.weight"), "bias": get(f"{prefix}.bias")}

    hidden = hf["hidden_size"]
    heads = hf["num_attention_heads"]
    head_dim = hidden // heads
    params = {
        "token_embed": {"embedding": get("embeddings.word_embeddings.weight")},
        "position_embed": get("embeddings.position_embeddings.weight"),
        "type_embed": get("embeddings.token_type_embeddings.weight"),
        "embed_norm": norm("embeddings.LayerNorm"),
    }
    for i in range(hf["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        attention = {}
        for name in ("query", "key", "value"):
            # torch Linear stores [out, in]; we keep [in, heads, head_dim].
            attention[f"{name}_kernel"] = get(f"{p}.attention.self.{name}.weight").T.reshape(
                hidden, heads, head_dim
            )
            attention[f"{name}_bias"] = get(f"{p}.attention.self.{name}.bias").reshape(heads, head_dim)
        attention["out_kernel"] = get(f"{p}.attention.output.dense.weight").T.reshape(heads, head_dim, hidden)
        attention["out_bias"] = get(f"{p}.attention.output.dense.bias")
        params[f"layer_{i}"] = {
            "attention": attention,
            "attention_norm": norm(f"{p}.attention.output.LayerNorm"),
            "mlp": {
                "wi": {
                    "kernel": get(f"{p}.intermediate.dense.weight").T,
                    "bias": get(f"{p}.intermediate.dense.bias"),
                },
                "wo": {"kernel": get(f"{p}.output.dense.weight").T, "bias": get(f"{p}.output.dense.bias")},
            },
            "mlp_norm": norm(f"{p}.output.LayerNorm"),
        }
    unused = sorted(k for k in weights if k not in used and not k.startswith(_IGNORED_PREFIXES))
    if unused:
        logging.warning("Ignoring %d tensors not in BertModel: %s", len(unused), ", ".join(unused[:5]))
    return params


def _max_length(folder: str, hf: dict[str, Any]) -> int:
    """The truncation length sentence-transformers would use."""
    limit = hf["max_position_embeddings"]
    st_path = os.path.join(folder, "sentence_bert_config.json")
    tok_path = os.path.join(folder, "tokenizer_config.json")
    st_config = _read_json(st_path, "") if os.path.exists(st_path) else {}
    tok_config = _read_json(tok_path, "") if os.path.exists(tok_path) else {}
    if st_config.get("max_seq_length"):
        return min(int(st_config["max_seq_length"]), limit)
    model_max = tok_config.get("model_max_length") or _NO_LIMIT
    return min(int(model_max), limit) if model_max < _NO_LIMIT else limit


def _vocab_file(folder: str) -> str:
    """The uncased WordPiece vocabulary file of a BERT folder."""
    tok_path = os.path.join(folder, "tokenizer_config.json")
    if os.path.exists(tok_path) and not _read_json(tok_path, "").get("do_lower_case", True):
        raise UserError(f"{folder}: cased WordPiece tokenizers (do_lower_case=false) are not supported yet.")
    # transformers >= 5 saves only tokenizer.json; older versions vocab.txt.
    for name in ("vocab.txt", "tokenizer.json"):
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise UserError(
        f"{folder} has neither vocab.txt nor tokenizer.json; a BERT "
        "folder needs its WordPiece vocabulary beside config.json."
    )


def load_bert_folder(path: str) -> ImportedModel:
    """Imports a sentence-transformers or plain HF BERT folder.

    Args:
      path: the folder.

    Returns:
      The `ImportedModel`; its config's `init` is 'st:<path>' and its `vocab`
      is 'wordpiece:<folder>/vocab.txt' (or '.../tokenizer.json').

    Raises:
      UserError: missing files, an unsupported module or architecture.
    """
    if not os.path.isdir(path):
        raise UserError(f"{path} is not a directory; pass a sentence-transformers or HF BERT folder.")
    pooling, normalize, projection = "mean", False, None
    transformer_dir = path
    modules_path = os.path.join(path, "modules.json")
    if os.path.exists(modules_path):
        modules = _read_json(modules_path, "")
        kinds = [_module_kind(m) for m in modules]
        expected = ["Transformer", "Pooling", "Dense", "Normalize"]
        if kinds[:2] != expected[:2] or kinds[2:] not in (expected[2:], expected[2:3], expected[3:], []):
            raise UserError(
                f"{modules_path}: modules {kinds} are not supported; "
                "expected Transformer, Pooling, [Dense], [Normalize]."
            )
        folders = [os.path.join(path, m["path"]) for m in modules]
        transformer_dir = folders[0]
        pooling = _pooling_mode(
            _read_json(os.path.join(folders[1], "config.json"), "the Pooling module needs it."), folders[1]
        )
        if "Dense" in kinds:
            projection = _dense_head(folders[kinds.index("Dense")])
        normalize = "Normalize" in kinds

    hf = _read_json(os.path.join(transformer_dir, "config.json"), "a BERT folder needs the HF config.json.")
    _check_architecture(hf, transformer_dir)
    vocab = _vocab_file(transformer_dir)
    params = {"backbone": _convert_bert(_load_safetensors(transformer_dir), hf)}
    if projection is not None:
        params["projection"] = {"kernel": projection}

    config = ml_collections.ConfigDict(
        {
            "name": "bert",
            "vocab_size": hf["vocab_size"],
            "hidden_size": hf["hidden_size"],
            "num_layers": hf["num_hidden_layers"],
            "num_heads": hf["num_attention_heads"],
            "intermediate_size": hf["intermediate_size"],
            "max_position_embeddings": hf["max_position_embeddings"],
            "type_vocab_size": hf.get("type_vocab_size", 2),
            "layer_norm_eps": hf.get("layer_norm_eps", 1e-12),
            "dropout_rate": hf.get("hidden_dropout_prob", 0.1),
            "attention_dropout_rate": hf.get("attention_probs_dropout_prob", 0.1),
            "pooling": pooling,
            "projection_dim": 0 if projection is None else projection.shape[1],
            "normalize": normalize,
            "dtype": "float32",
            "init": f"st:{path}",
            "vocab": f"wordpiece:{vocab}",
        }
    )
    return ImportedModel(config, params, _max_length(transformer_dir, hf))


def resolve_pretrained(spec: str) -> ImportedModel:
    """Imports the pretrained model named by a `model.init` spec.

    Args:
      spec: 'minilm' (all-MiniLM-L6-v2 from its PyPI package) or 'st:PATH'.

    Returns:
      The `ImportedModel`. For 'minilm', `init` and `vocab` are 'minilm' so that
      configs stay portable across machines.

    Raises:
      UserError: unknown spec, or what `load_bert_folder` raises.
    """
    if spec == "minilm":
        imported = load_bert_folder(minilm_folder())
        with imported.model_config.unlocked():
            imported.model_config.init = "minilm"
            imported.model_config.vocab = "minilm"
        return imported
    if spec.startswith("st:") and len(spec) > 3:
        return load_bert_folder(spec[3:])
    raise UserError(
        f"Unknown pretrained model {spec!r}; use 'minilm' or "
        "'st:PATH' (a sentence-transformers or HF BERT folder)."
    )


def merge_pretrained(init_params: Any, pretrained_params: Any) -> Any:
    """Puts pretrained leaves into a freshly initialised parameter tree.

    Args:
      init_params: the model's parameters (arrays, logical-axis boxes or
        `jax.ShapeDtypeStruct`s), e.g. with a new projection head.
      pretrained_params: a subtree-shaped dict of arrays, e.g.
        `ImportedModel.params`.

    Returns:
      `init_params` with every leaf that `pretrained_params` has replaced (cast
      to the initialised dtype, boxes kept) and the other leaves unchanged.

    Raises:
      UserError: a pretrained leaf has no counterpart or a different shape.
    """
    flat = traverse_util.flatten_dict(init_params)
    for key, value in traverse_util.flatten_dict(pretrained_params).items():
        name = "/".join(key)
        if key not in flat:
            raise UserError(
                f"Pretrained parameter {name} does not exist in the "
                "model; make config.model match the checkpoint."
            )
        target = flat[key]
        is_box = isinstance(target, meta.AxisMetadata)
        current = target.unbox() if is_box else target
        value = np.asarray(value)
        if tuple(value.shape) != tuple(current.shape):
            raise UserError(
                f"Pretrained parameter {name} has shape {tuple(value.shape)} but "
                f"the model has {tuple(current.shape)}; make config.model match "
                "the checkpoint."
            )
        value = value.astype(current.dtype, copy=False)
        flat[key] = target.replace_boxed(value) if is_box else value
    return traverse_util.unflatten_dict(flat)
