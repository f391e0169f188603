"""Imports Gemma GGUF files (read by `gguf_file.GgufFile`) as `GemmaCheckpoint`s.

Two conventions of llama.cpp's Gemma converter are undone on import: RMSNorm
weights are stored as (1 + w), and torch Linear weights keep their [out, in]
layout. Hyper-parameters a GGUF does not record take the values of the
released models of that generation (local RoPE base 10k, the local / global
layer pattern, queries scaled by 1/sqrt(head_dim)), as transformers does.
"""

from typing import Any, Optional

from gecko_jax.errors import UserError
from gecko_jax.gguf_file import GgufFile
from gecko_jax.models.gemma import GemmaConfig
from gecko_jax.models.gemma_checkpoint import GEMMA3_270M, GemmaCheckpoint, gemma_params

_ARCHITECTURES = {"gemma": 1, "gemma2": 2, "gemma3": 3}
# (local/global pattern, local RoPE base) of the released models.
_GENERATION_DEFAULTS = {1: (1, 10_000.0), 2: (2, 10_000.0), 3: (6, 10_000.0)}


def gguf_config(gguf: GgufFile) -> GemmaConfig:
    """The `GemmaConfig` (causal) that a Gemma GGUF file describes."""
    arch = gguf.metadata.get("general.architecture")
    if arch not in _ARCHITECTURES:
        raise UserError(
            f"{gguf.path}: architecture {arch!r} is not a Gemma; use a GGUF of {sorted(_ARCHITECTURES)}."
        )
    version = _ARCHITECTURES[arch]

    def get(key, default=None):
        value = gguf.metadata.get(f"{arch}.{key}", default)
        if value is None:
            raise UserError(f"{gguf.path}: metadata {arch}.{key} is missing.")
        return value

    pattern, local_base = _GENERATION_DEFAULTS[version]
    heads = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    head_dim = int(get("attention.key_length", hidden // heads))
    return GemmaConfig(
        vocab_size=len(gguf.metadata["tokenizer.ggml.tokens"]),
        hidden_size=hidden,
        num_layers=int(get("block_count")),
        num_heads=heads,
        num_kv_heads=int(get("attention.head_count_kv", heads)),
        head_dim=head_dim,
        intermediate_size=int(get("feed_forward_length")),
        version=version,
        norm_eps=float(get("attention.layer_norm_rms_epsilon")),
        query_pre_attn_scalar=head_dim,
        sliding_window=int(get("attention.sliding_window", 0)),
        sliding_window_pattern=pattern,
        rope_global_base=float(get("rope.freq_base", 10_000.0)),
        rope_local_base=local_base,
        rope_scaling_factor=float(get("rope.scaling.factor", 1.0)),
        attn_logit_softcap=float(get("attn_logit_softcapping", 0.0)),
        final_logit_softcap=float(get("final_logit_softcapping", 0.0)),
    )


# llama.cpp's tensor names, by role (see `gemma_checkpoint.gemma_params`).
_GGUF_NAMES = {
    "embedding": "token_embd.weight",
    "final_norm": "output_norm.weight",
    "q": "blk.{i}.attn_q.weight",
    "k": "blk.{i}.attn_k.weight",
    "v": "blk.{i}.attn_v.weight",
    "out": "blk.{i}.attn_output.weight",
    "q_norm": "blk.{i}.attn_q_norm.weight",
    "k_norm": "blk.{i}.attn_k_norm.weight",
    "pre_attention_norm": "blk.{i}.attn_norm.weight",
    "post_attention_norm": "blk.{i}.post_attention_norm.weight",
    "pre_mlp_norm": "blk.{i}.ffn_norm.weight",
    "post_mlp_norm": "blk.{i}.post_ffw_norm.weight",
    "gate": "blk.{i}.ffn_gate.weight",
    "up": "blk.{i}.ffn_up.weight",
    "down": "blk.{i}.ffn_down.weight",
}


def _gguf_params(gguf: GgufFile, config: GemmaConfig) -> dict[str, Any]:
    """Dequantizes the tensors onto the `Gemma` parameter tree."""
    names = set(gguf.tensor_names)
    used = set()

    def get(name):
        if name not in names:
            raise UserError(f"{gguf.path} has no tensor {name!r}; is it a complete Gemma GGUF?")
        used.add(name)
        return gguf.tensor(name)

    def norm(name):
        # llama.cpp stores the effective gain 1 + w.
        return {"scale": get(name) - 1.0}

    params = gemma_params(config, get, norm, _GGUF_NAMES)
    # An untied output matrix, say, would change the model: refuse it.
    unused = sorted(names - used)
    if unused:
        raise UserError(
            f"{gguf.path}: tensors {unused[:5]} do not fit a Gemma version {config.version} model."
        )
    return params


def load_gguf(path: str, spec: Optional[str] = None) -> GemmaCheckpoint:
    """Imports a Gemma GGUF file (parameters and tokenizer).

    Args:
      path: the .gguf file.
      spec: the spec to record (default 'gguf:PATH').

    Returns:
      The `GemmaCheckpoint`; its vocabulary spec reads the same file.

    Raises:
      UserError: unreadable file, not a Gemma, or missing tensors.
    """
    gguf = GgufFile(path)
    config = gguf_config(gguf)
    spec = spec or f"gguf:{path}"
    return GemmaCheckpoint(
        config=config,
        params=_gguf_params(gguf, config),
        vocab=spec if spec == GEMMA3_270M else f"gguf:{path}",
        spec=spec,
    )
