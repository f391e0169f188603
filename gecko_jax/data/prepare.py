"""Preparation: a stream of examples -> formatted, tokenized records on disk.

A prepared source is a folder:

    meta.json                                  what it holds and how it was made
    shard-00000-of-00004.array_record          one `records.py` record per example
    shard-00000-of-00004.lengths.npy           uint16 [n, 3] stored text lengths

ArrayRecord (with one record per chunk) gives random access by index, so a
host reads only the rows of its batches; the lengths table lets every host
pick a batch's bucket length without reading the other hosts' rows. Examples
go through the SeqIO Task of `tasks.py` (format, tokenize, pack) a chunk at a
time: preparation streams in constant memory, whatever the input's size.

The same `write_shard` runs in-process (`prepared_cache`, on first use) and
in each worker of the Beam pipeline (`data_pipelines/prepare_data.py`, one
shard per input file), so both give identical folders for the same inputs.
"""

import collections
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Iterable, Iterator, Mapping

from array_record.python import array_record_module
from etils import epath
import numpy as np
import seqio

from gecko_jax.data import batch_spec
from gecko_jax.data import formats
from gecko_jax.data import jsonl
from gecko_jax.data import records
from gecko_jax.data import tasks

META_FILE = "meta.json"
# Bumped whenever records, formatting or tokenization change what is stored,
# so that folders prepared by an older version are prepared again.
FORMAT_VERSION = 1
# One record per chunk: a random read decodes only its own record.
_WRITER_OPTIONS = "group_size:1"
_BATCH = 1024


def shard_name(index: int, count: int) -> str:
    """The file stem of shard `index` of `count`."""
    return f"shard-{index:05d}-of-{count:05d}"


def settings(vocabulary_fingerprint: str, fmt: str, lengths: Mapping[str, int]) -> dict[str, Any]:
    """Everything besides the examples that decides what a prepared folder holds."""
    return {
        "format_version": FORMAT_VERSION,
        "vocabulary": vocabulary_fingerprint,
        "format": fmt,
        "lengths": {k: int(lengths[k]) for k in batch_spec.TEXT_FIELDS},
    }


class _Identities:
    """Formats each example as it streams past and keeps its hashes until its tokens come out.

    The SeqIO pipeline keeps the examples' order, so the k-th converted row
    takes the k-th hashes.
    """

    def __init__(self, examples: Iterable[jsonl.Example], fmt: str, source: str):
        self._examples, self._fmt, self._source = examples, fmt, source
        self._pending = collections.deque()
        self.failure = None  # What stopped the reader (a bad line), raised once tf.data has stopped.

    def __iter__(self) -> Iterator[jsonl.Example]:
        try:
            for example in self._examples:
                texts = formats.format_example(example, self._fmt)
                example_id = example.get("id")
                self._pending.append(
                    (
                        records.text_fingerprint(texts["query"]),
                        records.text_fingerprint(texts["positive"]),
                        None
                        if example_id is None
                        else records.text_fingerprint(records.example_key(self._source, example_id, 0)),
                    )
                )
                yield example
        except Exception as e:  # pylint: disable=broad-except
            # Inside tf.data the error would come out wrapped in a TF traceback.
            self.failure = e

    def pop(self) -> tuple[int, int, int | None]:
        return self._pending.popleft()


def tokenized_batches(
    examples: Iterable[jsonl.Example],
    source: str,
    vocabulary: seqio.Vocabulary,
    fmt: str,
    lengths: Mapping[str, int],
) -> Iterator[tuple[dict[str, np.ndarray], list]]:
    """Formats, tokenizes and packs a stream of examples through the SeqIO Task.

    Args:
        examples: validated examples, in order.
        source: the source's name (for the ids of examples with an `id`).
        vocabulary: a seqio.Vocabulary with `bos_id`, `eos_id`, `pad_id`.
        fmt: one of `formats.FORMATS`.
        lengths: TEXT_FIELDS -> tokens per text, special tokens included.

    Yields:
        (converted batch of `tasks.MODEL_FEATURES`, the (query hash,
        positive hash, id hash or None) of each of its rows), in order.

    Raises:
        What reading the examples raised (e.g. a UserError naming a bad
        line), after the batches before it.
    """
    identities = _Identities(examples, fmt, source)
    task = tasks.register_task(tasks.task_name(f"prepare.{source}"), lambda: identities, vocabulary, fmt)
    converter = tasks.DualEncoderFeatureConverter(vocabulary.bos_id, vocabulary.eos_id, vocabulary.pad_id)
    for batch in tasks.converted_batches(task, converter, lengths, _BATCH):
        yield batch, [identities.pop() for _ in range(len(batch["has_negative"]))]
    if identities.failure is not None:
        raise identities.failure


def _local_copy_target(folder: str) -> tuple[str, bool]:
    """Where to write a shard: the folder itself when local, else a temporary folder copied after."""
    if "://" not in folder:
        return folder, False
    return tempfile.mkdtemp(prefix="gecko_jax_shard_"), True


def write_shard(
    examples: Iterable[jsonl.Example],
    source: str,
    vocabulary: seqio.Vocabulary,
    fmt: str,
    lengths: Mapping[str, int],
    folder: str,
    index: int = 0,
    count: int = 1,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Prepares one shard of a source.

    Args:
        examples: the shard's examples, in order.
        source: the source's name.
        vocabulary: tokenizes the formatted texts.
        fmt: one of `formats.FORMATS`.
        lengths: TEXT_FIELDS -> tokens per text, special tokens included.
        folder: the prepared folder (local, or any `etils.epath` path such as
            gs://; remote shards are written locally and copied).
        index: this shard's index.
        count: the number of shards of the source.
        progress: called with the number of examples of each written batch.

    Returns:
        The shard's entry of meta.json: file stem, examples, and counts for
        the log (with a negative, and texts that fill their length limit).
    """
    stem = shard_name(index, count)
    target, remote = _local_copy_target(folder)
    os.makedirs(target, exist_ok=True)
    writer = array_record_module.ArrayRecordWriter(
        os.path.join(target, f"{stem}.array_record"), _WRITER_OPTIONS
    )
    stored_lengths = []
    stats = {"examples": 0, "with_negative": 0, "at_limit": {k: 0 for k in batch_spec.TEXT_FIELDS}}
    try:
        for batch, hashes in tokenized_batches(examples, source, vocabulary, fmt, lengths):
            text_lengths = np.stack([batch[f"{k}_mask"].sum(axis=1) for k in batch_spec.TEXT_FIELDS], axis=1)
            for row, (query_hash, positive_hash, example_id) in enumerate(hashes):
                sequences = {
                    k: batch[f"{k}_ids"][row, : text_lengths[row, i]]
                    for i, k in enumerate(batch_spec.TEXT_FIELDS)
                }
                writer.write(records.encode(sequences, query_hash, positive_hash, example_id))
            stored_lengths.append(text_lengths.astype(np.uint16))
            stats["examples"] += len(hashes)
            stats["with_negative"] += int(batch["has_negative"].sum())
            for i, k in enumerate(batch_spec.TEXT_FIELDS):
                stats["at_limit"][k] += int((text_lengths[:, i] == lengths[k]).sum())
            if progress:
                progress(len(hashes))
    finally:
        writer.close()
    table = np.concatenate(stored_lengths) if stored_lengths else np.zeros((0, 3), np.uint16)
    np.save(os.path.join(target, f"{stem}.lengths.npy"), table)
    if remote:
        for suffix in (".array_record", ".lengths.npy"):
            epath.Path(target, stem + suffix).copy(epath.Path(folder, stem + suffix), overwrite=True)
        shutil.rmtree(target)
    return {"file": stem, **stats}


def write_meta(
    folder: str,
    source: str,
    prepared_settings: Mapping[str, Any],
    shards: list[dict[str, Any]],
    inputs: Any = None,
) -> dict[str, Any]:
    """Writes meta.json last, which marks the folder complete.

    Args:
        folder: the prepared folder.
        source: the source's name.
        prepared_settings: `settings(...)`.
        shards: `write_shard` results, in shard order.
        inputs: what the examples were read from, for people reading the file.

    Returns:
        The meta dict.
    """
    meta = {
        **prepared_settings,
        "source": source,
        "num_examples": sum(s["examples"] for s in shards),
        "shards": sorted(shards, key=lambda s: s["file"]),
        "inputs": inputs,
    }
    path = epath.Path(folder, META_FILE)
    temporary = epath.Path(folder, META_FILE + ".tmp")
    temporary.write_text(json.dumps(meta, indent=1))
    temporary.rename(path)
    return meta
