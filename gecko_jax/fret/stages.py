"""FRet's stages as Apache Beam transforms (Gecko, arXiv 2403.20327: FRet's two steps).

    passages ─┬─ EmbedCorpus ───────────────────────────┐ (side input)
              └─ SamplePassages ─ SkipFinished ─ GenerateQueries ─ RetrieveNeighbours
                   ─ Rerank ─ Relabel ─ WriteShards

The unit of work after sampling is a *shard*: a dict holding up to
`shard_size` seed passages, what each stage made of them, and the shard's
counts and seconds per stage. Shards flow through the fused stages one at a
time, so each is written (WriteShards) before the next one's LLM work starts,
and a crash loses at most the shard in progress; SkipFinished drops the
shards a previous run already wrote.

Every stage prints one progress line per shard (`fret STAGE: shard 3 of 13:
...`) and updates Beam counters in the `fret` namespace, which Dataflow shows
live. Models are loaded once per worker process and shared between the
stages that use the same spec (`shared_backend`, `shared_encoder`).
"""

import contextlib
import dataclasses
import functools
import math
import sys
import time
from typing import Any, Iterator, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
import numpy as np

from gecko_jax.encoder import Encoder
from gecko_jax.fret import corpus_index
from gecko_jax.fret import prompts as fret_prompts
from gecko_jax.fret import relabel as fret_relabel
from gecko_jax.fret import shard_files
from gecko_jax.fret.backends import load_backend
from gecko_jax.fret.llm import LLMBackend
from gecko_jax.fret.passages import stable_hash
from gecko_jax.fret.search import exact_top_k

Shard = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class LLMOptions:
    """How to reach the LLM; hashable, so workers share one loaded model."""

    spec: str
    batch_size: int = 8
    timeout_s: float = 120.0
    max_retries: int = 4
    concurrency: int = 8


@functools.lru_cache(maxsize=None)
def shared_backend(options: LLMOptions) -> LLMBackend:
    return load_backend(
        options.spec,
        batch_size=options.batch_size,
        timeout_s=options.timeout_s,
        max_retries=options.max_retries,
        concurrency=options.concurrency,
    )


@functools.lru_cache(maxsize=None)
def shared_encoder(spec: str, batch_size: int = 64) -> Encoder:
    return Encoder.load(spec, batch_size=batch_size)


def new_shard(index: int, num_shards: int, passages: list) -> Shard:
    return {
        "index": index,
        "num_shards": num_shards,
        "passages": passages,
        "items": [],
        "examples": [],
        "counts": {"sampled": len(passages)},
        "seconds": {},
    }


def _count(shard: Shard, name: str, amount: int = 1) -> None:
    shard["counts"][name] = shard["counts"].get(name, 0) + amount
    Metrics.counter("fret", name).inc(amount)


def _progress(stage: str, shard: Shard, line: str) -> None:
    seconds = shard["seconds"].get(stage, 0.0)
    print(
        f"fret {stage}: shard {shard['index'] + 1} of {shard['num_shards']}: {line} ({seconds:.1f} s)",
        file=sys.stderr,
        flush=True,
    )


@contextlib.contextmanager
def _timed(shard: Shard, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    shard["seconds"][stage] = shard["seconds"].get(stage, 0.0) + time.perf_counter() - start


def _split_into_shards(sampled: list, seed: int, shard_size: int) -> Iterator[Shard]:
    ordered = sorted(sampled, key=lambda p: (stable_hash(seed, p["id"]), p["id"]))
    num_shards = math.ceil(len(ordered) / shard_size)
    print(f"fret sample: {len(ordered)} seed passages in {num_shards} shards", file=sys.stderr, flush=True)
    for index in range(num_shards):
        yield new_shard(index, num_shards, ordered[index * shard_size : (index + 1) * shard_size])


class SamplePassages(beam.PTransform):
    """Passages -> shards of `num_passages` seed passages chosen by a seeded hash.

    The sample is the passages with the smallest hash of (seed, id): the same
    seed gives the same sample and the same shards on any runner.
    """

    def __init__(self, num_passages: int, seed: int, shard_size: int):
        super().__init__()
        self.num_passages, self.seed, self.shard_size = num_passages, seed, shard_size

    def expand(self, passages):
        seed = self.seed
        return (
            passages
            | "Smallest hashes"
            >> beam.combiners.Top.Of(
                self.num_passages, key=lambda p: stable_hash(seed, p["id"]), reverse=True
            )
            | "Split" >> beam.FlatMap(_split_into_shards, seed, self.shard_size)
        )


class SkipFinished(beam.PTransform):
    """Drops the shards whose files a previous run wrote completely."""

    def __init__(self, output_dir: str):
        super().__init__()
        self.output_dir = output_dir

    def expand(self, shards):
        output_dir = self.output_dir
        return shards | beam.Filter(
            lambda s: not shard_files.is_written(output_dir, s["index"], s["num_shards"])
        )


class _EmbedBlock(beam.DoFn):
    def __init__(self, embedder: str, index_dir: str, blocks: int):
        self.embedder, self.index_dir, self.blocks = embedder, index_dir, blocks

    def process(self, element):
        block, passages = element
        prefix = corpus_index.block_prefix(self.index_dir, block)
        if not corpus_index.is_complete(prefix):
            start = time.perf_counter()
            passages = sorted(passages, key=lambda p: p["id"])
            vectors = shared_encoder(self.embedder).encode([corpus_index.document_text(p) for p in passages])
            corpus_index.write_block(prefix, passages, vectors)
            Metrics.counter("fret", "corpus_embedded").inc(len(passages))
            print(
                f"fret embed: block {block + 1} of {self.blocks}: {len(passages)} passages "
                f"({time.perf_counter() - start:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
        yield prefix


class EmbedCorpus(beam.PTransform):
    """Passages -> the prefixes of the embedded corpus blocks (see corpus_index)."""

    def __init__(self, embedder: str, index_dir: str, blocks: int):
        super().__init__()
        self.embedder, self.index_dir, self.blocks = embedder, index_dir, blocks

    def expand(self, passages):
        blocks = self.blocks
        return (
            passages
            | "By block" >> beam.Map(lambda p: (corpus_index.block_of(p["id"], blocks), p))
            | "Group" >> beam.GroupByKey()
            | "Embed" >> beam.ParDo(_EmbedBlock(self.embedder, self.index_dir, blocks))
        )


class _Generate(beam.DoFn):
    def __init__(
        self, llm: LLMOptions, prompt: fret_prompts.Prompt, max_new_tokens: int, max_passage_words: int
    ):
        self.llm, self.prompt = llm, prompt
        self.max_new_tokens, self.max_passage_words = max_new_tokens, max_passage_words

    def process(self, shard: Shard):
        with _timed(shard, "generate"):
            texts = [
                self.prompt.render(
                    fret_prompts.rotation_for(p["id"]),
                    passage=fret_prompts.passage_text(p, self.max_passage_words),
                )
                for p in shard["passages"]
            ]
            outputs = shared_backend(self.llm).generate(
                texts, self.max_new_tokens, fret_prompts.GENERATION_STOPS
            )
            for passage, output in zip(shard["passages"], outputs):
                parsed = fret_prompts.parse_generation(output)
                if parsed is None:
                    _count(shard, "parse_failures")
                    continue
                task, query = parsed
                shard["items"].append({"seed": passage, "task": task, "query": query})
                _count(shard, "generated")
        _progress(
            "generate",
            shard,
            f"{len(shard['passages'])} passages -> {len(shard['items'])} queries, "
            f"{shard['counts'].get('parse_failures', 0)} unparseable",
        )
        yield shard


class GenerateQueries(beam.PTransform):
    """Shards -> shards whose items hold a (task, query) per parsed seed passage."""

    def __init__(
        self,
        llm: LLMOptions,
        prompt: fret_prompts.Prompt,
        max_new_tokens: int = 64,
        max_passage_words: int = 160,
    ):
        super().__init__()
        self.fn = _Generate(llm, prompt, max_new_tokens, max_passage_words)

    def expand(self, shards):
        return shards | beam.ParDo(self.fn)


class _Retrieve(beam.DoFn):
    def __init__(self, embedder: str, top_n: int, query_template: str):
        self.embedder, self.top_n, self.query_template = embedder, top_n, query_template
        self._index: Optional[corpus_index.CorpusIndex] = None

    def process(self, shard: Shard, prefixes):
        with _timed(shard, "retrieve"):
            if self._index is None:
                self._index = corpus_index.load_index(prefixes)
            index, items = self._index, shard["items"]
            if items:
                queries = [self.query_template.format(task=i["task"], query=i["query"]) for i in items]
                vectors = shared_encoder(self.embedder).encode(queries, show_progress=False)
                _, neighbours = exact_top_k(vectors, index.vectors, self.top_n)
                for item, row in zip(items, neighbours):
                    candidates = [index.passages[j] for j in row]
                    seed_id = item["seed"]["id"]
                    if seed_id in {c["id"] for c in candidates}:
                        _count(shard, "seed_in_top_n")
                    elif seed_id in index.position:
                        # The seed always competes: relabelling decides whether a
                        # neighbour beats it, as the paper's p_1 != p_seed counts.
                        candidates[-1] = index.passages[index.position[seed_id]]
                    item["candidates"] = candidates
                    _count(shard, "retrieved")
        _progress(
            "retrieve",
            shard,
            f"{len(items)} queries x top {self.top_n}, "
            f"{shard['counts'].get('seed_in_top_n', 0)} found their seed",
        )
        yield shard


class RetrieveNeighbours(beam.PTransform):
    """Shards -> shards whose items hold their top-N corpus neighbours.

    `prefixes` is the EmbedCorpus output, read as a side input.
    """

    def __init__(self, prefixes, embedder: str, top_n: int = 20, query_template: str = "{task}: {query}"):
        super().__init__()
        self.prefixes = prefixes
        self.fn = _Retrieve(embedder, top_n, query_template)

    def expand(self, shards):
        return shards | beam.ParDo(self.fn, beam.pvalue.AsList(self.prefixes))


RERANKERS = ("rrf", "ql", "rc")


class _Rerank(beam.DoFn):
    def __init__(
        self, llm: LLMOptions, prompts: fret_prompts.PromptSet, max_passage_words: int, reranker: str
    ):
        self.llm, self.prompts, self.max_passage_words = llm, prompts, max_passage_words
        self.scorers = ("ql", "rc") if reranker == "rrf" else (reranker,)

    def _score(self, pairs: list) -> dict[str, np.ndarray]:
        backend, out = shared_backend(self.llm), {}
        if "ql" in self.scorers:
            out["ql"] = backend.score(
                [self.prompts.query_likelihood.render(passage=p) for _, p in pairs],
                [" " + item["query"] for item, _ in pairs],
            )
        if "rc" in self.scorers:
            labels = backend.label_log_probs(
                [self.prompts.relevance.render(query=item["query"], passage=p) for item, p in pairs],
                fret_prompts.RELEVANCE_LABELS,
            )
            out["rc"] = fret_relabel.expected_grade(labels, fret_prompts.RELEVANCE_GRADES)
        return out

    def process(self, shard: Shard):
        items = shard["items"]
        with _timed(shard, "rerank"):
            pairs = [
                (item, fret_prompts.passage_text(c, self.max_passage_words))
                for item in items
                for c in item["candidates"]
            ]
            if pairs:
                scores = self._score(pairs)
                start = 0
                for item in items:
                    end = start + len(item["candidates"])
                    item["scores"] = {name: values[start:end].tolist() for name, values in scores.items()}
                    start = end
                _count(shard, "reranked_pairs", len(pairs))
        _progress(
            "rerank", shard, f"{len(pairs)} (query, passage) pairs scored by {' and '.join(self.scorers)}"
        )
        yield shard


class Rerank(beam.PTransform):
    """Shards -> items scored by query likelihood ('ql') and relevance classification ('rc').

    `reranker` 'rrf' computes both (Gecko); 'ql' or 'rc' computes one, for an
    LLM too small for the other to help (see the README).
    """

    def __init__(
        self,
        llm: LLMOptions,
        prompts: fret_prompts.PromptSet,
        max_passage_words: int = 160,
        reranker: str = "rrf",
    ):
        super().__init__()
        if reranker not in RERANKERS:
            raise ValueError(f"reranker must be one of {RERANKERS}, got {reranker!r}")
        self.fn = _Rerank(llm, prompts, max_passage_words, reranker)

    def expand(self, shards):
        return shards | beam.ParDo(self.fn)


def make_example(item: dict, choice: fret_relabel.Relabelled) -> dict:
    """The training row of one relabelled item (the jsonl.py schema plus FRet ids)."""
    positive, negative = item["candidates"][choice.positive], item["candidates"][choice.negative]
    example = {
        "id": item["seed"]["id"],
        "task": item["task"],
        "query": item["query"],
        "positive": positive["text"],
        "negative": negative["text"],
        "positive_id": positive["id"],
        "negative_id": negative["id"],
        "positive_changed": positive["id"] != item["seed"]["id"],
    }
    if positive["title"]:
        example["title"] = positive["title"]
    if negative["title"]:
        example["negative_title"] = negative["title"]
    return example


class _Relabel(beam.DoFn):
    def __init__(self, negative: str, seed: int):
        self.negative, self.seed = negative, seed

    def process(self, shard: Shard):
        with _timed(shard, "relabel"):
            for item in shard["items"]:
                # With one scorer, 1/rank orders the candidates as that scorer does.
                fused = fret_relabel.reciprocal_rank_fusion(*item["scores"].values())
                rng = np.random.default_rng(stable_hash(self.seed, "negative", item["seed"]["id"]))
                choice = fret_relabel.relabel(
                    fused, [c["text"] for c in item["candidates"]], self.negative, rng
                )
                if choice is None:
                    _count(shard, "no_negative")
                    continue
                example = make_example(item, choice)
                shard["examples"].append(example)
                _count(shard, "examples")
                _count(shard, "positive_changed", int(example["positive_changed"]))
        _progress(
            "relabel",
            shard,
            f"{len(shard['examples'])} examples, "
            f"{shard['counts'].get('positive_changed', 0)} with a new positive",
        )
        yield shard


class Relabel(beam.PTransform):
    """Shards -> shards with training examples: positive = top-1 by RRF, a hard negative."""

    def __init__(self, negative: str = "last", seed: int = 0):
        super().__init__()
        if negative not in fret_relabel.NEGATIVE_CHOICES:
            raise ValueError(f"negative must be one of {fret_relabel.NEGATIVE_CHOICES}")
        self.fn = _Relabel(negative, seed)

    def expand(self, shards):
        return shards | beam.ParDo(self.fn)


class _Write(beam.DoFn):
    def __init__(self, output_dir: str):
        self.output_dir = output_dir

    def process(self, shard: Shard):
        with _timed(shard, "write"):
            stats = shard_files.write_shard(self.output_dir, shard)
        # Beam's counter only: the shard's own stats are already on disk.
        Metrics.counter("fret", "written_shards").inc()
        _progress("write", shard, f"{len(shard['examples'])} examples written")
        yield stats


class WriteShards(beam.PTransform):
    """Shards -> their JSONL, TFRecord and stats files; yields each shard's stats."""

    def __init__(self, output_dir: str):
        super().__init__()
        self.fn = _Write(output_dir)

    def expand(self, shards):
        return shards | beam.ParDo(self.fn)
