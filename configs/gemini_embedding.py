r"""Gemini Embedding (arXiv 2503.07891): a bidirectional Gemma tower, NCE, two stages.

The backbone is Gemma-3-1B-shaped (Gemini itself is not available) run
bidirectionally, mean pooled, with a randomly initialised linear head to
3072 and Matryoshka prefixes 768/1536/3072; the loss is `gemini_nce` (explicit
positive, hard negative when present, duplicate/false-negative mask, no
same-tower negatives). The config argument picks the stage:

- `:prefinetune`: large batch (4096) of pairs without hard negatives from a
  noisy pooled mixture (SQuAD without negatives, StackOverflow same-label
  pairs, STS-B and SICK pairs, plus FRet output via data.fret_files), many
  steps.
- `:finetune` (the default): (query, positive, hard negative) triples,
  batch 512 (< 1024), one source per batch over the academic mixture.
- `:runlocal`: the fine-tuning stage shrunk to a tiny random Gemma 3 with the
  MiniLM vocabulary (vocab_size 30522) on the bundled tiny set; 3 steps on a CPU.

Each stage fits a Cloud TPU slice at its batch, checked ahead of time on any
Linux host (`pip install -e .[tpu-aot]`; tests/recipe_fit_test.py):

    python launch/compile.py --config=configs/gemini_embedding.py:prefinetune --topology=v5p:2x2x4
    python launch/compile.py --config=configs/gemini_embedding.py:finetune --topology=v5e:4x4

that is v5p-32 for pre-finetuning and v5e-16 (v5litepod-16) for fine-tuning.

`model.init` names the Gemma checkpoint: 'hf:PATH' (HF Gemma 3 folder) or
'gguf:PATH'; '' trains from scratch.

    python launch/train.py --config=configs/gemini_embedding.py:prefinetune --workdir=gs://B/pre \
        --config.model.init=hf:/path/to/gemma-3-1b-pt
    python launch/train.py --config=configs/gemini_embedding.py:finetune --workdir=gs://B/ft \
        --config.model.init=hf:/path/to/pre-finetuned-export
    python launch/train.py --config=configs/gemini_embedding.py:runlocal --workdir=runs/gemini_local
"""

from gecko_jax.config_base import base_config, bundled_data_dir
from gecko_jax.models import presets

_STAGES = ("prefinetune", "finetune", "runlocal")


def get_config(arg: str = ""):
    """Returns the recipe for stage `arg` (prefinetune | finetune | runlocal; '' = finetune)."""
    stage = arg or "finetune"
    if stage not in _STAGES:
        raise ValueError(f"unknown config argument {arg!r}; use :prefinetune, :finetune or :runlocal")
    c = base_config()
    c.mesh_shape.data = 1
    c.mesh_shape.fsdp = -1  # Pure FSDP for a ~1B model.
    c.log_every = 50
    c.checkpoint_every = 1000

    m = c.model
    presets.gemma3_1b(m)
    m.init = ""  # 'hf:PATH' | 'gguf:PATH' of a Gemma 3 checkpoint; '' = from scratch.
    m.attention = "bidirectional"
    m.pooling = "mean"
    m.projection_dim = 3072  # The randomly initialised linear head f.
    m.dropout_rate = 0.0
    m.attention_dropout_rate = 0.0
    m.dtype = "bfloat16"
    m.remat = True  # Recompute each layer's activations in the backward pass.
    m.scan_layers = True  # One loop body for the 26 layers.

    c.loss.name = "gemini_nce"
    c.loss.temperature = 0.05  # The paper gives none; configs/gecko_768.py's value.
    c.loss.same_tower = False
    c.loss.mrl_dims = (768, 1536, 3072)

    c.data.data_dir = bundled_data_dir(__file__)
    c.data.max_length = 256
    c.data.query_max_length = 64
    c.optimizer.warmup_steps = 1000

    if stage == "prefinetune":
        c.total_steps = 100_000
        c.batch_size = 4096
        c.data.mixture = ("squad", "stackoverflow", "stsb", "sick")
        c.data.squad_hard_negatives = False
        c.optimizer.learning_rate = 1e-4
        return c

    c.total_steps = 20_000
    c.batch_size = 512
    c.data.mixture = (
        "squad:3",
        "snli:2",
        "wikiqa:1",
        "trecqa:0.5",
        "banking77:1",
        "trec:1",
        "mr:1",
        "stsb:1",
        "sick:1",
    )
    c.data.one_source_batches = True
    c.optimizer.learning_rate = 2e-5
    if stage == "runlocal":
        c.total_steps = 3
        c.batch_size = 8
        c.log_every = 1
        c.checkpoint_every = 0
        c.mesh_shape.data = -1
        c.mesh_shape.fsdp = 1
        presets.gemma3_tiny(m)
        m.projection_dim = 48
        m.dtype = "float32"
        m.remat = False
        c.loss.mrl_dims = (12, 24, 48)
        c.data.mixture = ("tiny",)
        c.data.max_length = 32
        c.data.query_max_length = 24
        c.optimizer.learning_rate = 1e-3
        c.optimizer.warmup_steps = 1
    return c
