"""The training input: a deterministic, resumable, host-sharded batch stream.

All examples are tokenized once through the SeqIO tasks (`tasks.py`) and held
in memory as numpy arrays. Which examples form global batch k is a pure
function of (seed, k) (`order.py`): one stream over all sources, or, with
mixture rates or `data.one_source_batches`, per-source streams drawn by rate.
Host p takes rows [p * b, (p + 1) * b) of each global batch,
b = G / process_count, so every host computes the same global order without
talking to the others and the iterator state is just the next batch index.
Masks are stored as lengths (each mask is a prefix of ones) to halve memory.

With `data.bucket_lengths`, a batch's texts are padded only to the smallest
bucket (`packing.length_buckets`) that holds the longest text of its field
in the global batch, positives and negatives alike so that they share a
forward pass: a batch of short sentences then costs a fraction of one padded
to `max_length`. Every host computes the same lengths from the global order.
"""

import time
import zlib
from typing import Any

from absl import logging
import numpy as np

from gecko_jax.data import formats
from gecko_jax.data import mixtures
from gecko_jax.data import order
from gecko_jax.data import packing
from gecko_jax.data import tasks
from gecko_jax.errors import UserError

_STATE_KEYS = ("next_batch", "global_batch_size", "seed", "num_examples")
_ORDER_KEY = "order"  # Fingerprint of the mixture order; absent for the pooled order.

# Per-example int32 fingerprints that let a loss mask false negatives (Gemini
# NCE): equal values mean the same formatted query, the same formatted
# positive, or the same example id.
IDENTITY_FEATURES = ("query_hash", "positive_hash", "example_id")


def _fingerprint(text: str) -> int:
    # crc32 is stable across processes and hosts, unlike hash(); int32 for JAX.
    return zlib.crc32(text.encode("utf-8")) - (1 << 31)


def _identities(examples: list, fmt: str, source: str) -> dict[str, np.ndarray]:
    """The IDENTITY_FEATURES of one source's examples."""
    formatted = [formats.format_example(e, fmt) for e in examples]
    ids = [f"{source}/{e['id']}" if "id" in e else f"{source}#{row}" for row, e in enumerate(examples)]
    return {
        "query_hash": np.array([_fingerprint(f["query"]) for f in formatted], np.int32),
        "positive_hash": np.array([_fingerprint(f["positive"]) for f in formatted], np.int32),
        "example_id": np.array([_fingerprint(i) for i in ids], np.int32),
    }


class TrainData:
    """Iterator over this host's rows of each global training batch.

    Each item maps `{query,positive,negative}_{ids,mask}` to int32
    [global_batch_size // process_count, L], L = lengths[field] or, with
    `data.bucket_lengths`, the bucket of the batch's longest text, and `has_negative`
    and the IDENTITY_FEATURES to int32 [global_batch_size // process_count].

    Attributes:
        num_examples: examples in one epoch (all sources together).
        source_names: the sources, in mixture order.
        max_length: tokens per positive/negative text, special tokens included.
        lengths: tokens per text of each field (queries may be shorter).
    """

    def __init__(self, data_config: Any, vocabulary: Any, global_batch_size: int, seed: int,
                 process_index: int = 0, process_count: int = 1):
        """Loads, formats and tokenizes all training data.

        Args:
            data_config: the `data` config (`train_files`, `mixture`,
                `one_source_batches`, `data_dir`, `tfds_dir`, `fret_files`,
                `max_length`, `query_max_length`, `bucket_lengths`, `format`).
            vocabulary: a seqio.Vocabulary with `bos_id`, `eos_id`, `pad_id`.
            global_batch_size: examples per step over all hosts.
            seed: fixes the order (and SQuAD's hard negatives); >= 0.
            process_index: this host's index, in [0, process_count).
            process_count: number of hosts.

        Raises:
            UserError: bad sizes, format or seed, or missing/bad data.
        """
        if process_count < 1 or global_batch_size <= 0 or global_batch_size % process_count:
            raise UserError(f"global batch size {global_batch_size} must be positive and divisible by the "
                            f"{process_count} processes; change --config.batch_size")
        if not 0 <= process_index < process_count:
            raise UserError(f"process index {process_index} is outside [0, {process_count})")
        if seed < 0:
            raise UserError(f"seed must be >= 0 for the data order, got {seed}; change --config.seed")
        max_length = int(data_config.max_length)
        if max_length < 3:
            raise UserError(f"--config.data.max_length={max_length} leaves no room for text after the 2 special "
                            "tokens; use 3 or more")
        fmt = getattr(data_config, "format", "gecko")
        formats.check_format(fmt)
        query_max_length = int(data_config.query_max_length) or max_length
        if query_max_length < 3:
            raise UserError(f"--config.data.query_max_length={query_max_length} leaves no room for text; "
                            "use 3 or more (0 = data.max_length)")
        self.max_length = max_length
        self.lengths = {"query": query_max_length, "positive": max_length, "negative": max_length}
        self._global_batch_size = global_batch_size
        self._host_batch_size = global_batch_size // process_count
        self._row_offset = process_index * self._host_batch_size
        self._seed = seed
        self._bucket_lengths = bool(data_config.get("bucket_lengths", False))

        loaded = mixtures.load_mixture(data_config)
        self.source_names = [source.name for source in loaded]
        self._source_ends = np.cumsum([len(source.examples) for source in loaded])
        # One Task over all sources, in mixture order: building and tracing a
        # tokenizing dataset costs seconds, so it is paid once, not per source.
        task = tasks.register_task(tasks.task_name("train"),
                                   lambda: [e for source in loaded for e in source.examples], vocabulary, fmt)
        converter = tasks.DualEncoderFeatureConverter(vocabulary.bos_id, vocabulary.eos_id, vocabulary.pad_id)
        data = tasks.materialize(task, converter, self.lengths)
        starts = self._source_ends - [len(source.examples) for source in loaded]
        for name, start, end in zip(self.source_names, starts, self._source_ends):
            _log_source(name, {k: v[start:end] for k, v in data.items()})
        identities = [_identities(source.examples, fmt, source.name) for source in loaded]
        self.num_examples = len(data["has_negative"])
        self._ids = {k: data[f"{k}_ids"] for k in tasks.TEXT_FEATURES}
        self._lengths = {k: data[f"{k}_mask"].sum(axis=1, dtype=np.int32) for k in tasks.TEXT_FEATURES}
        self._has_negative = data["has_negative"]
        self._identity = {k: np.concatenate([part[k] for part in identities]) for k in IDENTITY_FEATURES}
        if data_config.one_source_batches or (not data_config.train_files and mixtures.has_rates(data_config.mixture)):
            self._order = order.MixedOrder(seed, [len(s.examples) for s in loaded], [s.rate for s in loaded],
                                           global_batch_size, bool(data_config.one_source_batches))
        else:
            self._order = order.PooledOrder(seed, self.num_examples, global_batch_size)
        self._next_batch = 0
        logging.info("data: %d examples in all, global batch %d, %.2f steps per epoch%s", self.num_examples,
                     global_batch_size, self.num_examples / global_batch_size,
                     ", one source per batch" if data_config.one_source_batches else "")

    def example_indices(self, batch_index: int) -> np.ndarray:
        """Indices (into the concatenated sources) of this host's rows of a batch.

        Args:
            batch_index: the global batch number k >= 0.

        Returns:
            int64 [host batch size].
        """
        return self._order.indices(batch_index, self._row_offset, self._host_batch_size)

    def source_of(self, indices: np.ndarray) -> list[str]:
        """The source name of each example index."""
        return [self.source_names[s] for s in np.searchsorted(self._source_ends, indices, side="right")]

    def batch_source(self, batch_index: int) -> str | None:
        """The one source of a batch under `one_source_batches`, else None."""
        source = self._order.batch_source(batch_index)
        return None if source is None else self.source_names[source]

    def batch(self, batch_index: int) -> dict[str, np.ndarray]:
        """This host's rows of global batch `batch_index` (does not move the iterator)."""
        indices = self.example_indices(batch_index)
        lengths = self.padded_lengths(batch_index)
        out = {}
        for k in tasks.TEXT_FEATURES:
            out[f"{k}_ids"] = self._ids[k][indices, :lengths[k]]
            positions = np.arange(lengths[k], dtype=np.int32)
            out[f"{k}_mask"] = (positions[None, :] < self._lengths[k][indices, None]).astype(np.int32)
        out["has_negative"] = self._has_negative[indices]
        for k in IDENTITY_FEATURES:
            out[k] = self._identity[k][indices]
        return out

    def padded_lengths(self, batch_index: int) -> dict[str, int]:
        """Tokens per text of each field in global batch `batch_index` (the same on every host)."""
        if not self._bucket_lengths:
            return self.lengths
        rows = self._order.indices(batch_index, 0, self._global_batch_size)
        return packing.field_lengths({k: int(self._lengths[k][rows].max()) for k in tasks.TEXT_FEATURES},
                                     self.lengths)

    def __iter__(self) -> "TrainData":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        out = self.batch(self._next_batch)
        self._next_batch += 1
        return out

    def get_state(self) -> dict[str, int]:
        """The iterator position, JSON-serialisable, the same on every host."""
        state = {"next_batch": self._next_batch, "global_batch_size": self._global_batch_size, "seed": self._seed,
                 "num_examples": self.num_examples}
        if self._order.fingerprint is not None:
            state[_ORDER_KEY] = self._order.fingerprint
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Resumes from a `get_state` result.

        Args:
            state: the saved state.

        Raises:
            UserError: the state is malformed, or was saved with other data,
                another seed or another global batch size.
        """
        if not isinstance(state, dict) or any(not isinstance(state.get(k), int) for k in _STATE_KEYS):
            raise UserError(f"data iterator state {state!r} is malformed (needs integer {', '.join(_STATE_KEYS)}); "
                            "the checkpoint may be damaged")
        if state["num_examples"] != self.num_examples:
            raise UserError(f"the training data changed since the checkpoint: it had {state['num_examples']} "
                            f"examples, now {self.num_examples}; restore the data or start a new workdir")
        if state["seed"] != self._seed:
            raise UserError(f"the data order changed since the checkpoint: seed {state['seed']} then, {self._seed} "
                            "now; resume with the same --config.seed or start a new workdir")
        if state["global_batch_size"] != self._global_batch_size:
            raise UserError(f"the checkpoint was written with global batch size {state['global_batch_size']}, "
                            f"now {self._global_batch_size}; resume with the same --config.batch_size")
        if state.get(_ORDER_KEY) != self._order.fingerprint:
            raise UserError("the mixture (rates, sources or data.one_source_batches) changed since the checkpoint; "
                            "resume with the same data settings or start a new workdir")
        if state["next_batch"] < 0:
            raise UserError(f"data iterator state has a negative next_batch {state['next_batch']}; the checkpoint "
                            "may be damaged")
        self._next_batch = state["next_batch"]


def measure_examples_per_second(data: TrainData, num_batches: int) -> float:
    """Examples/s of `next(data)` over `num_batches` batches (the state is restored after)."""
    state = data.get_state()
    start = time.perf_counter()
    rows = sum(len(next(data)["has_negative"]) for _ in range(num_batches))
    elapsed = time.perf_counter() - start
    data.set_state(state)
    return rows / elapsed


def _log_source(name: str, arrays: dict[str, np.ndarray]) -> None:
    """Logs one source's size, negatives and how often texts reach their length limit.

    A text that fills its limit was cut, or is exactly that long; the share of
    negatives is over the examples that have one.
    """
    count = len(arrays["has_negative"])
    with_negative = arrays["has_negative"].astype(bool)
    rows = {"query": slice(None), "positive": slice(None), "negative": with_negative}
    at_limit = ", ".join(f"{k} {_share(arrays[f'{k}_mask'][rows[k], -1]):.1%}"
                         for k in tasks.TEXT_FEATURES)
    logging.info("data: %s: %d examples, %d with a hard negative; at the length limit (cut): %s",
                 name, count, int(with_negative.sum()), at_limit)


def _share(flags: np.ndarray) -> float:
    return float(np.mean(flags)) if len(flags) else 0.0
