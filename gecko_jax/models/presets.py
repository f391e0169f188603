"""Named Gemma 3 architectures that recipe configs set on their `model` section.

Each preset sets architecture fields only; what a recipe trains with (init,
attention, pooling, projection, dtype, remat) stays in the recipe.
"""

import ml_collections

# What every Gemma 3 size shares: the SentencePiece tokenizer (taken from the
# gemma3-270m package), RMSNorm epsilon, RoPE bases and no soft-capping.
_GEMMA3 = dict(
    name="gemma",
    gemma_version=3,
    vocab="gemma3-270m",
    vocab_size=262_144,
    layer_norm_eps=1e-6,
    rope_local_base=10_000.0,
    rope_global_base=1_000_000.0,
    rope_scaling_factor=1.0,
    attn_logit_softcap=0.0,
    final_logit_softcap=0.0,
)


def gemma3_270m(model: ml_collections.ConfigDict) -> None:
    """Sets `model` to Gemma 3 270M (18 layers, width 640), as its GGUF file describes it."""
    model.update(
        _GEMMA3,
        hidden_size=640,
        num_layers=18,
        num_heads=4,
        num_kv_heads=1,
        head_dim=256,
        intermediate_size=2048,
        query_pre_attn_scalar=256.0,
        sliding_window=512,
        sliding_window_pattern=6,
    )


def gemma3_1b(model: ml_collections.ConfigDict) -> None:
    """Sets `model` to Gemma 3 1B (26 layers, width 1152; 999,885,952 parameters)."""
    model.update(
        _GEMMA3,
        hidden_size=1152,
        num_layers=26,
        num_heads=4,
        num_kv_heads=1,
        head_dim=256,
        intermediate_size=6912,
        query_pre_attn_scalar=256.0,
        sliding_window=512,
        sliding_window_pattern=6,
    )


def gemma3_tiny(model: ml_collections.ConfigDict) -> None:
    """Sets `model` to a random Gemma 3 small enough for a CPU `:runlocal` run.

    Layers 0-1 are local (window 16, below the 32-token texts of the runlocal
    recipes), layer 2 global; 2 key/value heads serve 4 query heads. The MiniLM
    WordPiece vocabulary keeps the embedding small.
    """
    model.update(
        _GEMMA3,
        vocab="minilm",
        vocab_size=30522,
        hidden_size=64,
        num_layers=3,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=128,
        query_pre_attn_scalar=16.0,
        sliding_window=16,
        sliding_window_pattern=3,
    )
