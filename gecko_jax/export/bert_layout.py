"""Our BERT backbone as an HF `BertModel`: config.json and tensor names.

The inverse of `models.bert_import`: attention kernels kept as [in, heads,
head_dim] become torch `Linear` weights of [out, in], LayerNorm scales become
`weight`. The NSP pooler is not written (sentence-transformers never runs it;
transformers initialises it and says so).
"""

from typing import Any

import ml_collections
import numpy as np

from gecko_jax.export import torch_linear


def bert_tensors(backbone: dict[str, Any], num_layers: int) -> dict[str, np.ndarray]:
    """HF `BertModel` tensors of a `BertEncoder` parameter tree.

    Args:
      backbone: the tower's 'backbone' parameters.
      num_layers: transformer layers.

    Returns:
      Name -> float32 array, as `BertModel.save_pretrained` names them.
    """
    tensors = {
        "embeddings.word_embeddings.weight": backbone["token_embed"]["embedding"],
        "embeddings.position_embeddings.weight": backbone["position_embed"],
        "embeddings.token_type_embeddings.weight": backbone["type_embed"],
    }

    def norm(name, params):
        tensors[f"{name}.weight"] = params["scale"]
        tensors[f"{name}.bias"] = params["bias"]

    norm("embeddings.LayerNorm", backbone["embed_norm"])
    for i in range(num_layers):
        layer = backbone[f"layer_{i}"]
        prefix = f"encoder.layer.{i}"
        attention = layer["attention"]
        for name in ("query", "key", "value"):
            tensors[f"{prefix}.attention.self.{name}.weight"] = torch_linear.in_projection(
                attention[f"{name}_kernel"]
            )
            tensors[f"{prefix}.attention.self.{name}.bias"] = np.reshape(attention[f"{name}_bias"], -1)
        tensors[f"{prefix}.attention.output.dense.weight"] = torch_linear.out_projection(
            attention["out_kernel"]
        )
        tensors[f"{prefix}.attention.output.dense.bias"] = attention["out_bias"]
        norm(f"{prefix}.attention.output.LayerNorm", layer["attention_norm"])
        tensors[f"{prefix}.intermediate.dense.weight"] = torch_linear.in_projection(
            layer["mlp"]["wi"]["kernel"]
        )
        tensors[f"{prefix}.intermediate.dense.bias"] = layer["mlp"]["wi"]["bias"]
        tensors[f"{prefix}.output.dense.weight"] = torch_linear.in_projection(layer["mlp"]["wo"]["kernel"])
        tensors[f"{prefix}.output.dense.bias"] = layer["mlp"]["wo"]["bias"]
        norm(f"{prefix}.output.LayerNorm", layer["mlp_norm"])
    return {name: np.ascontiguousarray(value, np.float32) for name, value in tensors.items()}


def bert_hf_config(model: ml_collections.ConfigDict) -> dict[str, Any]:
    """The HF `BertConfig` (config.json) of a `config.model` section."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": model.vocab_size,
        "hidden_size": model.hidden_size,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads,
        "intermediate_size": model.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": model.dropout_rate,
        "attention_probs_dropout_prob": model.attention_dropout_rate,
        "max_position_embeddings": model.max_position_embeddings,
        "type_vocab_size": model.type_vocab_size,
        "layer_norm_eps": model.layer_norm_eps,
        "position_embedding_type": "absolute",
        "pad_token_id": 0,
        "dtype": "float32",
    }
