"""Writes a tower as a sentence-transformers folder.

    export_model("runs/gecko_minilm", "exported/gecko_minilm")

The folder is the classic sentence-transformers layout, which every version
since 2.x loads and `Encoder.load` reads back:

    modules.json                      Transformer -> Pooling [-> Dense] [-> Normalize]
    config.json, model.safetensors    the backbone (HF BertModel or Gemma3TextModel)
    tokenizer files                   see `tokenizer_files`
    sentence_bert_config.json         max_seq_length (bos and eos included)
    config_sentence_transformers.json prompts and the cosine similarity
    1_Pooling/config.json             mean, cls or last-token pooling
    2_Dense/                          the projection head (bias-free, linear)

Weights are written in float32 whatever the training dtype. The folder is
written beside `output` under a temporary name and renamed when complete, so
an interrupted export leaves nothing that looks finished.
"""

import json
import os
from typing import Any, Callable

import ml_collections
import numpy as np
from safetensors.numpy import save_file

from gecko_jax import output_folder
from gecko_jax.data.vocabularies import get_vocabulary
from gecko_jax.errors import UserError
from gecko_jax.export import bert_layout, gemma_layout, tokenizer_files
from gecko_jax.export.source import ST_CONFIG_FILE, ExportSource, load_source

_ST_POOLING_KEYS = {
    "mean": "pooling_mode_mean_tokens",
    "cls": "pooling_mode_cls_token",
    "last": "pooling_mode_lasttoken",
}
_MODULE_TYPE = "sentence_transformers.models.{}"


def _write_json(path: str, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")


def _save_tensors(tensors: dict[str, np.ndarray], path: str) -> None:
    # transformers refuses safetensors files without the 'format' entry.
    save_file(tensors, path, metadata={"format": "pt"})


def _backbone(source: ExportSource, vocab) -> tuple[dict, dict]:
    """(HF config.json, tensors) of the backbone."""
    model = source.model_config
    backbone = source.params["backbone"]
    if model.name == "bert":
        return (bert_layout.bert_hf_config(model), bert_layout.bert_tensors(backbone, model.num_layers))
    if model.name == "gemma":
        gemma_layout.check_exportable(model)
        config = gemma_layout.gemma_hf_config(model, source.max_length, tokenizer_files.special_ids(vocab))
        return config, gemma_layout.gemma_tensors(backbone, model.num_layers)
    raise UserError(f"model.name {model.name!r} cannot be exported; only 'bert' and 'gemma' backbones can.")


def _check_tower(model: ml_collections.ConfigDict) -> None:
    if model.get("multi_vector_dim", 0):
        raise UserError(
            "Multi-vector (XTR) towers have no sentence-transformers "
            "layout; only single-vector towers can be exported."
        )
    if model.pooling not in _ST_POOLING_KEYS:
        raise UserError(
            f"model.pooling {model.pooling!r} cannot be exported; use one of {sorted(_ST_POOLING_KEYS)}."
        )


def _pooling_config(model: ml_collections.ConfigDict) -> dict[str, Any]:
    config = {"word_embedding_dimension": model.hidden_size}
    for key in (
        "pooling_mode_cls_token",
        "pooling_mode_mean_tokens",
        "pooling_mode_max_tokens",
        "pooling_mode_mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens",
        "pooling_mode_lasttoken",
    ):
        config[key] = key == _ST_POOLING_KEYS[model.pooling]
    config["include_prompt"] = True
    return config


def write_folder(source: ExportSource, folder: str, progress: Callable[[str], None] = lambda _: None) -> None:
    """Writes `source` as a sentence-transformers model into an empty `folder`.

    Args:
      source: the model.
      folder: an existing, empty folder.
      progress: called with a short line before each slow step.

    Raises:
      UserError: a tower this layout cannot express.
    """
    model = source.model_config
    _check_tower(model)
    vocab = get_vocabulary(model.vocab)
    progress("converting the backbone weights")
    hf_config, tensors = _backbone(source, vocab)
    progress(f"writing {len(tensors)} tensors to model.safetensors")
    _write_json(os.path.join(folder, "config.json"), hf_config)
    _save_tensors(tensors, os.path.join(folder, "model.safetensors"))
    tokenizer_files.write_tokenizer(vocab, folder, source.max_length)
    _write_json(
        os.path.join(folder, "sentence_bert_config.json"),
        {"max_seq_length": source.max_length, "do_lower_case": False},
    )

    modules = [("Transformer", ""), ("Pooling", "1_Pooling")]
    os.makedirs(os.path.join(folder, "1_Pooling"))
    _write_json(os.path.join(folder, "1_Pooling", "config.json"), _pooling_config(model))
    if model.projection_dim:
        kernel = np.asarray(source.params["projection"]["kernel"], np.float32)
        dense = f"{len(modules)}_Dense"
        modules.append(("Dense", dense))
        os.makedirs(os.path.join(folder, dense))
        _write_json(
            os.path.join(folder, dense, "config.json"),
            {
                "in_features": int(kernel.shape[0]),
                "out_features": int(kernel.shape[1]),
                "bias": False,
                "activation_function": "torch.nn.modules.linear.Identity",
            },
        )
        _save_tensors(
            {"linear.weight": np.ascontiguousarray(kernel.T)},
            os.path.join(folder, dense, "model.safetensors"),
        )
    if model.normalize:
        modules.append(("Normalize", f"{len(modules)}_Normalize"))
    _write_json(
        os.path.join(folder, "modules.json"),
        [
            {"idx": i, "name": str(i), "path": path, "type": _MODULE_TYPE.format(kind)}
            for i, (kind, path) in enumerate(modules)
        ],
    )
    _write_json(
        os.path.join(folder, ST_CONFIG_FILE),
        {"prompts": source.prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )


def export_model(spec: str, output: str, progress: Callable[[str], None] = lambda _: None) -> None:
    """Exports the model named by `spec` to the folder `output`.

    Args:
      spec: any model spec `Encoder.load` accepts.
      output: the folder to create; it must not exist or be empty.
      progress: called with a short line before each slow step.

    Raises:
      UserError: `output` holds files, or the model cannot be exported.
    """
    output = os.path.abspath(output)
    output_folder.check_new(output)
    progress(f"reading {spec}")
    source = load_source(spec)
    with output_folder.written_whole(output) as partial:
        write_folder(source, partial, progress)
