r"""Gecko: a ~1B Gemma 3 dual encoder with 768-d embeddings and Matryoshka prefixes.

The recipe of Gecko (arXiv 2403.20327): a Gemma-3-1B-shaped decoder (26 layers, width
1152, 4 query heads sharing 1 key/value head of 256, GeGLU width 6912, five
sliding-window layers of 512 tokens per global one, RoPE bases 10k local / 1M
global, 262,144 SentencePiece tokens; 999,885,952 parameters, as the released
Gemma 3 1B) run bidirectionally, masked mean pooling, a dense projection to
768, Gecko's loss with in-batch, same-tower and hard negatives, Matryoshka
768/512/256/128, sharded with pure FSDP over all chips.

It fits a Cloud TPU v5e-16 (v5litepod-16, 16 GB of HBM per chip) at batch
1024, checked ahead of time on any Linux host (`pip install -e .[tpu-aot]`;
tests/recipe_fit_test.py):

    python launch/compile.py --config=configs/gecko_768.py --topology=v5e:4x4

Two things make it fit: each layer is recomputed in the backward pass, and
the 26 layers run as one scanned loop whose body is a single block (a layer's
window and RoPE base are loop inputs). For batches beyond what a slice holds,
`--config.grad_cache.chunk_size=N` (GradCache, arXiv 2101.06983) runs the
backward pass in chunks of N examples, at the cost of one more forward pass.

`model.init` names the checkpoint it starts from: '' trains from scratch,
'hf:PATH' reads an HF Gemma 3 folder (config.json + safetensors), 'gguf:PATH'
a GGUF file. The tokenizer is Gemma 3's (`model.vocab`, taken from the
gemma3-270m package; every Gemma 3 size shares it); pass
--config.model.vocab=sentencepiece:PATH/tokenizer.model to use the one next to
your checkpoint.

Cloud TPU (run on every host of the slice):

    python launch/train.py --config=configs/gecko_768.py --workdir=gs://BUCKET/gecko_768 \
        --config.model.init=hf:/path/to/gemma-3-1b-pt \
        --config.data.fret_files=/data/fret/train-0.jsonl,/data/fret/train-1.jsonl

The mixture is FRet (JSONL or TFRecord files with a task per row, given by
`data.fret_files`) plus the academic sets of ../shared/data, by rate.

Laptop CPU, the same recipe shrunk to a tiny random Gemma 3 (3 layers, two
local and one global, grouped-query attention, the MiniLM WordPiece vocabulary)
on bundled data, 6 steps in about a minute on a 2-core CPU, most of it start-up
and compilation:

    python launch/train.py --config=configs/gecko_768.py:runlocal --workdir=runs/local
"""

from gecko_jax.config_base import base_config, bundled_data_dir
from gecko_jax.models import presets


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

    presets.gemma3_1b(c.model)
    c.model.init = ""  # 'hf:PATH' | 'gguf:PATH' of a Gemma 3 1B checkpoint; '' = from scratch.
    c.model.attention = "bidirectional"
    c.model.pooling = "mean"
    c.model.projection_dim = 768
    c.model.dropout_rate = 0.0
    c.model.dtype = "bfloat16"
    c.model.remat = True  # Recompute each layer's activations in the backward pass.
    c.model.scan_layers = True  # One loop body instead of 26 layers: less to compile.

    c.data.data_dir = bundled_data_dir(__file__)
    # Gecko (arXiv 2403.20327): FRet plus the academic sets, each in its Gecko format.
    c.data.mixture = (
        "fret:4",
        "squad:2",
        "snli:2",
        "stsb:1",
        "sick:1",
        "banking77:1",
        "trec:1",
        "mr:1",
        "stackoverflow:1",
        "wikiqa:1",
        "trecqa:0.5",
    )
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
        presets.gemma3_tiny(c.model)
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
