r"""Gecko: a ~1B dual encoder with 768-d embeddings and a 256-d Matryoshka prefix.

Target recipe (methods.md §1): a pretrained Gemma-style decoder made
bidirectional, masked mean pooling, 768-d output, Gecko's loss with in-batch,
same-tower and hard negatives, Matryoshka 768/256, on the unified mixture.
Until the Gemma backbone lands, the tower is a BERT of comparable size
(24 layers, width 2048, ~1.2B parameters) trained from scratch, projected to 768.

Cloud TPU (run on every host of the slice):

    python launch/train.py --config=configs/gecko_768.py --workdir=gs://BUCKET/gecko_768

Laptop CPU, the same recipe shrunk to a tiny random model on bundled data
(6 steps, well under a minute):

    python launch/train.py --config=configs/gecko_768.py:runlocal --workdir=runs/local
"""

import os

from gecko_jax.config_base import base_config

_SHARED_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


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

    c.model.hidden_size = 2048
    c.model.num_layers = 24
    c.model.num_heads = 16
    c.model.intermediate_size = 8192
    c.model.projection_dim = 768
    c.model.dropout_rate = 0.0
    c.model.attention_dropout_rate = 0.0
    c.model.dtype = "bfloat16"

    c.data.data_dir = os.path.normpath(_SHARED_DATA) if os.path.isdir(_SHARED_DATA) else ""
    c.data.mixture = ("squad", "snli")
    c.data.max_length = 256
    c.data.query_max_length = 64

    c.loss.temperature = 0.05
    c.loss.mrl_dims = (768, 256)

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
        c.model.hidden_size = 64
        c.model.num_layers = 2
        c.model.num_heads = 4
        c.model.intermediate_size = 128
        c.model.projection_dim = 32
        c.model.dtype = "float32"
        c.data.mixture = ("tiny",)
        c.data.max_length = 32
        c.data.query_max_length = 24
        c.loss.mrl_dims = (32, 16)
        c.optimizer.learning_rate = 1e-3
        c.optimizer.warmup_steps = 2
    return c
