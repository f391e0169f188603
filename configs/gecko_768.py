r"""Gecko: a ~1B Gemma 3 dual encoder with 768-d embeddings and Matryoshka prefixes.

The recipe of methods.md §1: a Gemma-3-1B-shaped decoder (26 layers, width
1152, 4 query heads sharing 1 key/value head of 256, GeGLU width 6912, five
sliding-window layers of 512 tokens per global one, RoPE bases 10k local / 1M
global, 262,144 SentencePiece tokens; 999,885,952 parameters, as the released
Gemma 3 1B) run bidirectionally, masked mean pooling, a dense projection to
768, Gecko's loss with in-batch, same-tower and hard negatives, Matryoshka
768/512/256/128, sharded with pure FSDP over all chips.

`model.init` names the checkpoint it starts from: '' trains from scratch,
'hf:PATH' reads an HF Gemma 3 folder (config.json + safetensors), 'gguf:PATH'
a GGUF file. The tokenizer is Gemma 3's (`model.vocab`, taken from the
gemma3-270m package; every Gemma 3 size shares it); pass
--config.model.vocab=sentencepiece:PATH/tokenizer.model to use the one next to
your checkpoint.

Cloud TPU (run on every host of the slice):

    python launch/train.py --config=configs/gecko_768.py --workdir=gs://BUCKET/gecko_768 \
        --config.model.init=hf:/path/to/gemma-3-1b-pt

Laptop CPU, the same recipe shrunk to a tiny random Gemma 3 (3 layers, two
local and one global, grouped-query attention, the MiniLM WordPiece vocabulary)
on bundled data, 6 steps in about a minute on a 2-core CPU, most of it start-up
and compilation:

    python launch/train.py --config=configs/gecko_768.py:runlocal --workdir=runs/local
"""

import os

from gecko_jax.config_base import base_config

_SHARED_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def _gemma3_1b(model) -> None:
    """Sets `model` (a config.model section) to the Gemma 3 1B architecture."""
    model.name = "gemma"
    model.gemma_version = 3
    model.vocab = "gemma3-270m"  # Gemma 3's SentencePiece tokenizer, shared by all sizes.
    model.vocab_size = 262_144
    model.hidden_size = 1152
    model.num_layers = 26
    model.num_heads = 4
    model.num_kv_heads = 1
    model.head_dim = 256
    model.intermediate_size = 6912
    model.layer_norm_eps = 1e-6
    model.query_pre_attn_scalar = 256.0
    model.sliding_window = 512
    model.sliding_window_pattern = 6
    model.rope_local_base = 10_000.0
    model.rope_global_base = 1_000_000.0
    model.rope_scaling_factor = 1.0
    model.attn_logit_softcap = 0.0
    model.final_logit_softcap = 0.0


def get_config(arg: str = ""):
    """Returns the recipe; arg 'runlocal' shrinks it for a CPU."""
    runlocal = arg == "runlocal"
    if arg not in ("", "runlocal"):
        raise ValueError(f"unknown config argument {arg!r}; use configs/gecko_768.py or :runlocal")
    c = base_config()
    c.total_steps = 20_000
    c.batch_size = 1024
    c.log_every = 50
    c.eval_every = 2000
    c.checkpoint_every = 1000
    # Pure FSDP: ~1B parameters fit best sharded over all chips, batch on both axes.
    c.mesh_shape.data = 1
    c.mesh_shape.fsdp = -1

    _gemma3_1b(c.model)
    c.model.init = ""  # 'hf:PATH' | 'gguf:PATH' of a Gemma 3 1B checkpoint; '' = from scratch.
    c.model.attention = "bidirectional"
    c.model.pooling = "mean"
    c.model.projection_dim = 768
    c.model.dropout_rate = 0.0
    c.model.dtype = "bfloat16"
    c.model.remat = True  # Recompute each layer's activations in the backward pass.

    c.data.data_dir = os.path.normpath(_SHARED_DATA) if os.path.isdir(_SHARED_DATA) else ""
    c.data.mixture = ("squad", "snli")
    c.data.max_length = 256
    c.data.query_max_length = 64

    c.loss.temperature = 0.05
    c.loss.mrl_dims = (768, 512, 256, 128)

    c.optimizer.learning_rate = 1e-4
    c.optimizer.warmup_steps = 1000

    if runlocal:
        c.total_steps = 6
        c.batch_size = 8
        c.log_every = 1
        c.eval_every = 0
        c.checkpoint_every = 3
        c.mesh_shape.data = -1
        c.mesh_shape.fsdp = 1
        # A tiny Gemma 3: layers 0-1 local (window 16 < the 32-token texts),
        # layer 2 global, 2 key/value heads for 4 query heads, QK-norm.
        c.model.vocab = "minilm"
        c.model.vocab_size = 30522
        c.model.hidden_size = 64
        c.model.num_layers = 3
        c.model.num_heads = 4
        c.model.num_kv_heads = 2
        c.model.head_dim = 16
        c.model.intermediate_size = 128
        c.model.query_pre_attn_scalar = 16.0
        c.model.sliding_window = 16
        c.model.sliding_window_pattern = 3
        c.model.projection_dim = 32
        c.model.dtype = "float32"
        c.model.remat = False
        c.data.mixture = ("tiny",)
        c.data.max_length = 32
        c.data.query_max_length = 24
        c.loss.mrl_dims = (32, 16, 8)
        c.optimizer.learning_rate = 1e-3
        c.optimizer.warmup_steps = 2
    return c
