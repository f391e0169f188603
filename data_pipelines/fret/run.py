r"""FRet: turns a passage corpus into (task, query, positive, hard negative) data.

    python data_pipelines/fret/run.py --passages=FILE.jsonl --output=DIR \
        [--llm=gemma3-270m] [--embedder=minilm] [--num_passages=N] [--top_n=20] \
        [--negative=last|random] [--runner=DirectRunner|DataflowRunner|FlinkRunner|SparkRunner] \
        [Beam pipeline options, e.g. --project=... --region=... --temp_location=gs://...]

Each line of FILE.jsonl is {"id", "title"?, "text"}. The stages (Gecko, arXiv
2403.20327; gecko_jax/fret/stages.py): sample seed passages; generate a task and a
query for each with a few-shot prompt (prompts/); embed the corpus and
retrieve each task+query's top-N neighbours; rerank them with the same LLM by
query likelihood and relevance classification, fused by reciprocal rank;
relabel (positive = top-1, hard negative = rank N or random); write
DIR/train-SSSSS-of-NNNNN.{jsonl,tfrecord} and DIR/stats.json.

Rerunning with the same --output skips the shards already written (once a
shard or corpus block is written the flags must match; DIR/run.json records
them). Train on the output with
--config.data.train_files='DIR/train-*.jsonl', or add `fret:RATE` to a
mixture with --config.data.fret_files='DIR/train-*.tfrecord'.

LLM specs: gemma3-270m, gguf:PATH, hf:PATH (local JAX Gemma), or
openai:MODEL@BASE_URL (an OpenAI-compatible /v1/completions server such as
vLLM; key in OPENAI_API_KEY) or gemini:MODEL[@BASE_URL] (generateContent; key
in GEMINI_API_KEY). Gemini returns no log-probabilities of given text, so give
it a --rerank_llm that does.
"""

import json
import logging
import os
import sys
import time
import zlib

from absl import flags
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from gecko_jax import cli
from gecko_jax.errors import UserError
from gecko_jax.fret import corpus_index
from gecko_jax.fret import model_specs
from gecko_jax.fret import passages as fret_passages
from gecko_jax.fret import prompts as fret_prompts
from gecko_jax.fret import relabel as fret_relabel
from gecko_jax.fret import shard_files
from gecko_jax.fret import stages

_PROMPTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompts")

_PASSAGES = flags.DEFINE_string("passages", None, "JSONL corpus: one {id, title?, text} per line.")
_OUTPUT = flags.DEFINE_string("output", None, "Output folder (local or gs://).")
_LLM = flags.DEFINE_string("llm", "gemma3-270m", "LLM that generates and reranks (see the docstring).")
_RERANK_LLM = flags.DEFINE_string("rerank_llm", None, "LLM for reranking; default: --llm.")
_EMBEDDER = flags.DEFINE_string("embedder", "minilm", "Initial embedder (an Encoder spec).")
_NUM_PASSAGES = flags.DEFINE_integer("num_passages", None, "Seed passages to sample; default: all.")
_TOP_N = flags.DEFINE_integer("top_n", 20, "Neighbours retrieved and reranked per query.")
_NEGATIVE = flags.DEFINE_enum(
    "negative",
    "last",
    fret_relabel.NEGATIVE_CHOICES,
    "Hard negative: the rank-N candidate, or a random non-positive.",
)
_RERANK = flags.DEFINE_enum(
    "rerank",
    "rrf",
    stages.RERANKERS,
    "rrf: fuse query likelihood and relevance classification (Gecko); ql or rc: one of them alone.",
)
_RUNNER = flags.DEFINE_string("runner", "DirectRunner", "Beam runner.")
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the passage sample and random negatives.")
_SHARD_SIZE = flags.DEFINE_integer("shard_size", 16, "Seed passages per output shard (the unit of resume).")
_PROMPTS = flags.DEFINE_string("prompts_dir", _PROMPTS_DIR, "Folder of the three prompt files.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 64, "Generation length limit.")
_MAX_PASSAGE_WORDS = flags.DEFINE_integer("max_passage_words", 160, "Passage words shown to the LLM.")
_QUERY_TEMPLATE = flags.DEFINE_string(
    "query_template", "{task}: {query}", "How the embedder sees a generated task and query."
)
_LLM_BATCH = flags.DEFINE_integer("llm_batch_size", 8, "Prompts per forward pass of a local LLM.")
_LLM_TIMEOUT = flags.DEFINE_float("llm_timeout", 120.0, "Seconds per HTTP request before a retry.")
_LLM_RETRIES = flags.DEFINE_integer("llm_retries", 4, "Retries of a failed HTTP request.")
_LLM_CONCURRENCY = flags.DEFINE_integer("llm_concurrency", 8, "HTTP requests in flight at once.")
_CORPUS_BLOCK = flags.DEFINE_integer(
    "corpus_block_size", corpus_index.DEFAULT_BLOCK_SIZE, "Passages per embedded corpus block."
)


def _parse_flags(argv: list[str]) -> list[str]:
    """Our flags; everything else is left for Beam's PipelineOptions."""
    return flags.FLAGS(argv, known_only=True)


def _check_flags(argv_rest: list[str]) -> None:
    cli.check_args(argv_rest[:1], _PASSAGES, _OUTPUT)
    for flag, low in (
        (_TOP_N, 2),
        (_SHARD_SIZE, 1),
        (_MAX_NEW_TOKENS, 1),
        (_MAX_PASSAGE_WORDS, 1),
        (_LLM_BATCH, 1),
        (_LLM_CONCURRENCY, 1),
        (_CORPUS_BLOCK, 1),
    ):
        if flag.value < low:
            raise UserError(f"--{flag.name} must be at least {low}; got {flag.value}")
    if _NUM_PASSAGES.value is not None and _NUM_PASSAGES.value < 1:
        raise UserError(f"--num_passages must be at least 1; got {_NUM_PASSAGES.value}")
    for arg in argv_rest[1:]:
        if not arg.startswith("--"):
            raise UserError(f"unexpected argument {arg!r}; pipeline options look like --name=value")


def _llm_options(spec: str) -> stages.LLMOptions:
    return stages.LLMOptions(
        spec, _LLM_BATCH.value, _LLM_TIMEOUT.value, _LLM_RETRIES.value, _LLM_CONCURRENCY.value
    )


def _check_model_specs() -> None:
    """Refuses a bad model spec before anything is written (the workers load the models)."""
    for flag in (_LLM, _RERANK_LLM, _EMBEDDER):
        if flag.value is None:
            continue  # --rerank_llm defaults to --llm.
        try:
            if flag is _EMBEDDER:
                model_specs.check_embedder(flag.value)
            else:
                model_specs.check_llm(_llm_options(flag.value))
        except UserError as err:
            raise UserError(f"--{flag.name}: {err}") from None


def _quiet_beam_errors() -> None:
    """Keeps Beam from logging a failed step's traceback before our one-line error.

    -v (--verbosity=1) shows it again.
    """
    if flags.FLAGS.verbosity < 1:
        logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)


def _prompts_fingerprint(folder: str) -> int:
    crc = 0
    for name in fret_prompts.PROMPT_FILES:
        with open(os.path.join(folder, name), "rb") as f:
            crc = zlib.crc32(f.read(), crc)
    return crc


def main(argv: list[str]) -> None:
    _check_flags(argv)
    _check_model_specs()
    _quiet_beam_errors()
    output = _OUTPUT.value
    prompt_set = fret_prompts.PromptSet.from_dir(_PROMPTS.value)
    total = fret_passages.check_passages(_PASSAGES.value)
    num_passages = min(_NUM_PASSAGES.value or total, total)
    num_shards = -(-num_passages // _SHARD_SIZE.value)
    rerank_llm = _RERANK_LLM.value or _LLM.value
    shard_files.check_run(
        output,
        {
            "passages": _PASSAGES.value,
            "num_passages": num_passages,
            "seed": _SEED.value,
            "shard_size": _SHARD_SIZE.value,
            "top_n": _TOP_N.value,
            "negative": _NEGATIVE.value,
            "rerank": _RERANK.value,
            "llm": _LLM.value,
            "rerank_llm": rerank_llm,
            "embedder": _EMBEDDER.value,
            "max_new_tokens": _MAX_NEW_TOKENS.value,
            "max_passage_words": _MAX_PASSAGE_WORDS.value,
            "query_template": _QUERY_TEMPLATE.value,
            "corpus_block_size": _CORPUS_BLOCK.value,
            "prompts_crc32": _prompts_fingerprint(_PROMPTS.value),
        },
    )
    done = sum(shard_files.is_written(output, i, num_shards) for i in range(num_shards))
    print(
        f"fret: {total} passages in the corpus, {num_passages} seeds in {num_shards} shards "
        f"({done} already written)",
        file=sys.stderr,
        flush=True,
    )

    blocks = corpus_index.num_blocks(total, _CORPUS_BLOCK.value)
    index_dir = os.path.join(output, shard_files.CORPUS_DIR)
    options = PipelineOptions(argv[1:], runner=_RUNNER.value)
    start = time.time()
    path, words = _PASSAGES.value, _MAX_PASSAGE_WORDS.value
    with beam.Pipeline(options=options) as pipeline:
        passages = (
            pipeline
            | "Read" >> beam.io.ReadFromText(path)
            | "Non-blank" >> beam.Filter(str.strip)
            | "Parse" >> beam.Map(fret_passages.parse_passage, path)
        )
        prefixes = passages | "EmbedCorpus" >> stages.EmbedCorpus(_EMBEDDER.value, index_dir, blocks)
        _ = (
            passages
            | "Sample" >> stages.SamplePassages(num_passages, _SEED.value, _SHARD_SIZE.value)
            | "SkipFinished" >> stages.SkipFinished(output)
            | "Spread" >> beam.Reshuffle()
            | "Generate"
            >> stages.GenerateQueries(
                _llm_options(_LLM.value), prompt_set.generate, _MAX_NEW_TOKENS.value, words
            )
            | "Retrieve"
            >> stages.RetrieveNeighbours(prefixes, _EMBEDDER.value, _TOP_N.value, _QUERY_TEMPLATE.value)
            | "Rerank" >> stages.Rerank(_llm_options(rerank_llm), prompt_set, words, _RERANK.value)
            | "Relabel" >> stages.Relabel(_NEGATIVE.value, _SEED.value)
            | "Write" >> stages.WriteShards(output)
        )
    stats = shard_files.merge_stats(output, num_shards)
    stats["wall_seconds_this_run"] = round(time.time() - start, 1)
    print(json.dumps(stats, indent=1))
    print(
        f"fret: wrote {stats['counts'].get('examples', 0)} examples in {stats['shards']['written']} "
        f"of {num_shards} shards to {output}",
        file=sys.stderr,
        flush=True,
    )


if __name__ == "__main__":
    cli.run(main, flags_parser=_parse_flags)
