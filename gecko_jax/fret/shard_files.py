"""FRet's output folder: shards of training examples, their stats, the total.

    OUTPUT/train-00003-of-00013.jsonl       examples (jsonl.py schema + FRet ids)
    OUTPUT/train-00003-of-00013.tfrecord    the same examples as tf.train.Example
    OUTPUT/train-00003-of-00013.stats.json  the shard's counts and seconds per stage
    OUTPUT/stats.json                       all shards summed (`merge_stats`)
    OUTPUT/run.json                         the flags the shards were made with
    OUTPUT/corpus/                          the embedded corpus (corpus_index.py)

A shard's stats file is written last, so it marks the shard complete; each
file is renamed into place whole, so a crash never leaves half a file under
a final name. Train on the output with
`--config.data.train_files=OUTPUT/train-*.jsonl` or, in a mixture,
`--config.data.fret_files=OUTPUT/train-*.tfrecord` and the entry `fret:RATE`;
`register_task` registers it as a SeqIO task by name.
"""

import json
import os
from typing import Any, Sequence

import seqio
import tensorflow as tf

from gecko_jax.data import mixtures
from gecko_jax.data import tasks
from gecko_jax.data import tfrecord
from gecko_jax.errors import UserError
from gecko_jax.fret import corpus_index
from gecko_jax.fret.corpus_index import write_atomically

STATS_FILE = "stats.json"
RUN_FILE = "run.json"
SHARD_GLOB = "train-*-of-*.jsonl"
CORPUS_DIR = "corpus"
# The run.json entries the embedded corpus depends on.
CORPUS_FLAGS = ("passages", "embedder", "corpus_block_size")


def shard_prefix(output_dir: str, index: int, num_shards: int) -> str:
    return os.path.join(output_dir, f"train-{index:05d}-of-{num_shards:05d}")


def is_written(output_dir: str, index: int, num_shards: int) -> bool:
    return tf.io.gfile.exists(shard_prefix(output_dir, index, num_shards) + ".stats.json")


def write_shard(output_dir: str, shard: dict) -> dict:
    """Writes a shard's examples and stats; returns the stats."""
    prefix = shard_prefix(output_dir, shard["index"], shard["num_shards"])
    examples = shard["examples"]
    lines = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples)
    write_atomically(prefix + ".jsonl", lines.encode("utf-8"))
    tfrecord.write_tfrecord(prefix + ".tfrecord.tmp", examples)
    tf.io.gfile.rename(prefix + ".tfrecord.tmp", prefix + ".tfrecord", overwrite=True)
    stats = {"shard": shard["index"], "counts": shard["counts"], "seconds": shard["seconds"]}
    write_atomically(prefix + ".stats.json", json.dumps(stats, indent=1).encode("utf-8"))
    return stats


def merge_stats(output_dir: str, num_shards: int) -> dict[str, Any]:
    """Sums the shard stats into OUTPUT/stats.json and returns it."""
    counts: dict[str, int] = {}
    seconds: dict[str, float] = {}
    written = 0
    for index in range(num_shards):
        path = shard_prefix(output_dir, index, num_shards) + ".stats.json"
        if not tf.io.gfile.exists(path):
            continue
        with tf.io.gfile.GFile(path) as f:
            shard = json.load(f)
        written += 1
        for key, value in shard["counts"].items():
            counts[key] = counts.get(key, 0) + value
        for key, value in shard["seconds"].items():
            seconds[key] = seconds.get(key, 0.0) + value
    examples = counts.get("examples", 0)
    stats = {
        "shards": {"written": written, "total": num_shards},
        "counts": counts,
        "parse_failures": counts.get("parse_failures", 0),
        "positive_changed_fraction": counts.get("positive_changed", 0) / examples if examples else 0.0,
        "seed_in_top_n_fraction": (
            counts.get("seed_in_top_n", 0) / counts["retrieved"] if counts.get("retrieved") else 0.0
        ),
        "seconds_per_stage": {k: round(v, 2) for k, v in seconds.items()},
    }
    write_atomically(os.path.join(output_dir, STATS_FILE), json.dumps(stats, indent=1).encode("utf-8"))
    return stats


def check_run(output_dir: str, run: dict[str, Any]) -> None:
    """Records the run's flags in run.json, unless finished work needs other flags.

    Shards depend on every flag and the embedded corpus on `CORPUS_FLAGS`; an
    earlier run that left neither (say, one that failed on a bad spec) binds a
    rerun to nothing, and run.json takes the new flags. A half-written shard
    binds too: a rerun with other flags may name its shards differently and
    leave it behind for training to read.

    Raises:
      UserError: OUTPUT holds shards or an embedded corpus made with other flags.
    """
    path = os.path.join(output_dir, RUN_FILE)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            previous = json.load(f)
        if output_files(output_dir):
            _check_unchanged(output_dir, "shards", sorted(set(run) | set(previous)), previous, run)
        if corpus_index.has_complete_blocks(os.path.join(output_dir, CORPUS_DIR)):
            _check_unchanged(output_dir, "an embedded corpus", CORPUS_FLAGS, previous, run)
        if run == previous:
            return
    tf.io.gfile.makedirs(output_dir)
    write_atomically(path, json.dumps(run, indent=1).encode("utf-8"))


def _check_unchanged(
    output_dir: str, work: str, names: Sequence[str], previous: dict[str, Any], run: dict[str, Any]
) -> None:
    changed = [k for k in names if run.get(k) != previous.get(k)]
    if changed:
        detail = ", ".join(f"--{k}={previous.get(k)!r} (now {run.get(k)!r})" for k in changed)
        raise UserError(
            f"{output_dir} holds {work} made with {detail}; rerun with those flags to "
            "resume, or give a new --output"
        )


def output_files(output_dir: str, kind: str = "jsonl") -> list[str]:
    """The shard files of one kind ('jsonl' or 'tfrecord'), sorted."""
    return sorted(tf.io.gfile.glob(os.path.join(output_dir, SHARD_GLOB.replace("jsonl", kind))))


def register_task(
    output_dir: str, vocabulary: seqio.Vocabulary, name: str = "fret", fmt: str = "gecko"
) -> seqio.Task:
    """Registers a FRet output folder as the SeqIO task `gecko_jax.NAME`.

    Raises:
      UserError: the folder has no shards.
    """
    files = output_files(output_dir, "tfrecord")
    if not files:
        raise UserError(f"{output_dir} has no FRet shards; run data_pipelines/fret/run.py first")
    return tasks.register_task(
        tasks.task_name(name),
        lambda: mixtures.read_files(",".join(files), "fret_files", ("task",)),
        vocabulary,
        fmt,
    )
