r"""AligneR (arXiv 2211.01267): sparse alignment with learned unary saliences.

all-MiniLM-L6-v2 gets XTR's per-token head (a dense layer to 128-d, each token
vector L2-normalised, padding zeroed) and two salience heads, one for queries
and one for documents: u = lambda * ReLU(w . h + b), with lambda the soft
top-k gate of an entropy-regularised LP keeping alpha^q = 50% of query and
alpha^d = 40% of document tokens (eps = 0.002), as in the paper. A query
scores a document by sim = sum_ij S_ij A_ij / sum_ij A_ij with A = top-1
alignment times the saliences, and the loss is the softmax cross-entropy over
the batch's positives and hard negatives. The paper trains T5 towers 25k steps
at batch 256 with queries of 64 and documents of 256 tokens; this recipe keeps
its step count and XTR's recipe shapes here (batch 128, 32 and 128 tokens,
which bound the [B, n, 2B, m] similarity block). Its learning rate, optimizer
and temperature are not published; AdamW at 1e-4 with 1000 warmup steps and
a temperature of 0.05 here. The data are SQuAD question -> paragraph pairs
(with another paragraph of the article as hard negative) and SNLI triplets.

    python launch/train.py --config=configs/aligner.py --workdir=runs/aligner

Laptop CPU, the same recipe with batch 8 and short texts (3 steps):

    python launch/train.py --config=configs/aligner.py:runlocal --workdir=runs/aligner_local

Afterwards AligneR's retrieval scores it, here with 40% of the document tokens
indexed, half the query tokens searching, and the alignment picked on 8
labelled queries:

    python launch/evaluate.py --model=runs/aligner --task=retrieval --data=BEIR_FOLDER \
        --prune_doc=0.4 --prune_query=0.5 --adapt_alignment=8
"""

from gecko_jax.config_base import base_config, bundled_data_dir


def get_config(arg: str = ""):
    """Returns the recipe; arg 'runlocal' shrinks it for a CPU."""
    if arg not in ("", "runlocal"):
        raise ValueError(f"unknown config argument {arg!r}; use configs/aligner.py or :runlocal")
    c = base_config()
    c.total_steps = 25_000
    c.batch_size = 128
    c.log_every = 50
    c.checkpoint_every = 1000

    c.model.init = "minilm"
    c.model.multi_vector_dim = 128
    c.model.salience_heads = True
    c.model.salience_query_fraction = 0.5
    c.model.salience_doc_fraction = 0.4
    c.model.salience_epsilon = 0.002
    c.model.dropout_rate = 0.0
    c.model.attention_dropout_rate = 0.0

    c.data.data_dir = bundled_data_dir(__file__)
    c.data.mixture = ("squad", "snli")
    c.data.max_length = 128
    c.data.query_max_length = 32

    c.loss.name = "aligner"
    c.loss.aligner_alignment = "top1"
    c.loss.temperature = 0.05

    c.optimizer.learning_rate = 1e-4
    c.optimizer.warmup_steps = 1000

    if arg == "runlocal":
        c.total_steps = 3
        c.batch_size = 8
        c.log_every = 1
        c.checkpoint_every = 0
        c.data.mixture = ("tiny",)
        c.data.max_length = 32
        c.data.query_max_length = 16
        c.optimizer.warmup_steps = 1
    return c
