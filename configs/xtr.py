r"""XTR (arXiv 2304.01982): a multi-vector tower trained by in-batch token retrieval.

all-MiniLM-L6-v2 gets a per-token head (a dense layer to 128-d, each token
vector L2-normalised, padding zeroed) instead of pooling. Every query token
retrieves its top k_train tokens among all document tokens of the batch
(positives and hard negatives of every example); a document is scored by the
tokens it got retrieved, normalised by Z, and the cross-entropy over the
batch's documents has no temperature. The paper trains 50k iterations at
learning rate 1e-3 with batches of 128 to 320 and picks k_train from
{32, 64, 128, 256, 320} per batch size; this recipe takes batch 128 and
k_train 128. Its optimizer and warmup are not published (AdamW with 1000
warmup steps here). The data are SQuAD question -> paragraph pairs (with
another paragraph of the article as hard negative) and SNLI triplets.

    python launch/train.py --config=configs/xtr.py --workdir=runs/xtr

Laptop CPU, the same recipe with batch 8 and short texts (3 steps):

    python launch/train.py --config=configs/xtr.py:runlocal --workdir=runs/xtr_local

In-training STS and retrieval evaluation score one vector per text, so the
run skips them (and says so); afterwards XTR's token retrieval scores it:

    python launch/evaluate.py --model=runs/xtr --task=retrieval --data=BEIR_FOLDER
"""

from gecko_jax.config_base import base_config, bundled_data_dir


def get_config(arg: str = ""):
    """Returns the recipe; arg 'runlocal' shrinks it for a CPU."""
    if arg not in ("", "runlocal"):
        raise ValueError(f"unknown config argument {arg!r}; use configs/xtr.py or :runlocal")
    c = base_config()
    c.total_steps = 50_000
    c.batch_size = 128
    c.log_every = 50
    c.checkpoint_every = 1000

    c.model.init = "minilm"
    c.model.multi_vector_dim = 128
    c.model.dropout_rate = 0.0
    c.model.attention_dropout_rate = 0.0

    c.data.data_dir = bundled_data_dir(__file__)
    c.data.mixture = ("squad", "snli")
    c.data.max_length = 128
    c.data.query_max_length = 32

    c.loss.name = "xtr"
    c.loss.xtr_k_train = 128

    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 1000

    if arg == "runlocal":
        c.total_steps = 3
        c.batch_size = 8
        c.log_every = 1
        c.checkpoint_every = 0
        c.data.mixture = ("tiny",)
        c.data.max_length = 32
        c.data.query_max_length = 16
        c.loss.xtr_k_train = 32
        c.optimizer.learning_rate = 1e-4
        c.optimizer.warmup_steps = 1
    return c
