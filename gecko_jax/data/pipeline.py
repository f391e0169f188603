"""The training input: a deterministic, resumable, host-sharded batch stream.

Every source is prepared once into ArrayRecord shards of tokenized records
(`prepare.py`, cached by `prepared_cache.py`, or prepared ahead by
`data_pipelines/prepare_data.py`) and read by example index, so a start on
prepared data costs the same time and memory for ten thousand examples or a
billion. Which examples form global batch k is a pure function of (seed, k)
(`order.py`): one stream over all sources, or, with mixture rates or
`data.one_source_batches`, per-source streams drawn by rate. Host p reads
only rows [p * b, (p + 1) * b) of each global batch, b = G / process_count,
so every host computes the same global order without talking to the others
and the iterator state is just the next batch index.

With `data.bucket_lengths`, a batch's texts are padded only to the smallest
bucket (`packing.length_buckets`) that holds the longest text of its field
in the global batch, positives and negatives alike so that they share a
forward pass: a batch of short sentences then costs a fraction of one padded
to `max_length`. Every host computes the same lengths from the global order
and the sources' lengths tables, without reading the other hosts' records.
"""

import time
from typing import Any

from absl import logging
import numpy as np

from gecko_jax.data import batch_spec
from gecko_jax.data import formats
from gecko_jax.data import mixtures
from gecko_jax.data import order
from gecko_jax.data import packing
from gecko_jax.data import prepared_cache
from gecko_jax.data import tasks
from gecko_jax.errors import UserError

_STATE_KEYS = ("next_batch", "global_batch_size", "seed", "num_examples")
_ORDER_KEY = "order"  # Fingerprint of the mixture order; absent for the pooled order.

IDENTITY_FEATURES = batch_spec.IDENTITY_FEATURES


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

    def __init__(
        self,
        data_config: Any,
        vocabulary: Any,
        global_batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
    ):
        """Opens the training data, preparing each source first if it is not prepared yet.

        Args:
            data_config: the `data` config (`train_files`, `mixture`,
                `one_source_batches`, `data_dir`, `tfds_dir`, `fret_files`,
                `max_length`, `query_max_length`, `bucket_lengths`, `format`,
                `cache_dir`).
            vocabulary: a seqio.Vocabulary with `bos_id`, `eos_id`, `pad_id`.
            global_batch_size: examples per step over all hosts.
            seed: fixes the order (and SQuAD's hard negatives); >= 0.
            process_index: this host's index, in [0, process_count).
            process_count: number of hosts.

        Raises:
            UserError: bad sizes, format or seed, or missing/bad data.
        """
        if process_count < 1 or global_batch_size <= 0 or global_batch_size % process_count:
            raise UserError(
                f"global batch size {global_batch_size} must be positive and divisible by the "
                f"{process_count} processes; change --config.batch_size"
            )
        if not 0 <= process_index < process_count:
            raise UserError(f"process index {process_index} is outside [0, {process_count})")
        if seed < 0:
            raise UserError(f"seed must be >= 0 for the data order, got {seed}; change --config.seed")
        self.lengths = batch_spec.text_lengths(data_config)
        self.max_length = self.lengths["positive"]
        fmt = getattr(data_config, "format", "gecko")
        formats.check_format(fmt)
        self._global_batch_size = global_batch_size
        self._host_batch_size = global_batch_size // process_count
        self._row_offset = process_index * self._host_batch_size
        self._seed = seed
        self._bucket_lengths = bool(data_config.get("bucket_lengths", False))
        self._pad_id = vocabulary.pad_id

        inputs = mixtures.source_inputs(data_config)
        root = prepared_cache.cache_root(data_config)
        self._sources = [
            prepared_cache.open_source(source, vocabulary, fmt, self.lengths, root) for source in inputs
        ]
        self.source_names = [source.name for source in inputs]
        sizes = [source.num_examples for source in self._sources]
        for name, source in zip(self.source_names, self._sources):
            if not source.num_examples:
                raise UserError(
                    f"data source {name!r} gave no examples; check its files or drop it from the mixture"
                )
            logging.info("data: %s", source.log_line())
        rates = [float(size) if source.rate is None else source.rate for source, size in zip(inputs, sizes)]
        logging.info(
            "data: mixture %s",
            ", ".join(f"{n} {r / sum(rates):.1%}" for n, r in zip(self.source_names, rates)),
        )
        self._source_ends = np.cumsum(sizes)
        self._source_starts = self._source_ends - sizes
        self.num_examples = int(self._source_ends[-1])
        if data_config.one_source_batches or (
            not data_config.train_files and mixtures.has_rates(data_config.mixture)
        ):
            self._order = order.MixedOrder(
                seed, sizes, rates, global_batch_size, bool(data_config.one_source_batches)
            )
        else:
            self._order = order.PooledOrder(seed, self.num_examples, global_batch_size)
        self._next_batch = 0
        logging.info(
            "data: %d examples in all, global batch %d, %.2f steps per epoch%s",
            self.num_examples,
            global_batch_size,
            self.num_examples / global_batch_size,
            ", one source per batch" if data_config.one_source_batches else "",
        )

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
        """This host's rows of global batch `batch_index` (does not move the iterator).

        When no row of the global batch has a hard negative, `negative_ids` and
        `negative_mask` are left out (they would be all padding), and the train
        step skips the negatives' forward pass; `has_negative` stays.
        """
        # The global batch's rows are needed for its lengths anyway; this host's are a slice of them.
        global_rows = self._order.indices(batch_index, 0, self._global_batch_size)
        indices = global_rows[self._row_offset : self._row_offset + self._host_batch_size]
        longest = self._longest(global_rows)
        padded = self.padded_lengths(batch_index, longest)
        out = {}
        for source, rows in self._by_source(indices):
            part = self._sources[source].read(
                indices[rows] - self._source_starts[source], padded, self._pad_id
            )
            for key, values in part.items():
                if key not in out:
                    out[key] = np.empty((len(indices),) + values.shape[1:], values.dtype)
                out[key][rows] = values
        if not longest["negative"]:
            del out["negative_ids"], out["negative_mask"]
        return out

    def _longest(self, rows: np.ndarray) -> dict[str, int]:
        """The stored length of the longest text of each field among `rows` (a global batch)."""
        longest = np.zeros(len(tasks.TEXT_FEATURES), np.int64)
        for source, positions in self._by_source(rows):
            lengths = self._sources[source].lengths(rows[positions] - self._source_starts[source])
            longest = np.maximum(longest, lengths.max(axis=0))
        return dict(zip(tasks.TEXT_FEATURES, (int(n) for n in longest)))

    def _by_source(self, indices: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """(source, positions in `indices` of its examples) for each source that `indices` touches."""
        sources = np.searchsorted(self._source_ends, indices, side="right")
        return [(int(s), np.flatnonzero(sources == s)) for s in np.unique(sources)]

    def padded_lengths(self, batch_index: int, longest: dict[str, int] | None = None) -> dict[str, int]:
        """Tokens per text of each field in global batch `batch_index` (the same on every host).

        Args:
            batch_index: the global batch number.
            longest: `_longest(batch_index)`, when the caller has it already.
        """
        if not self._bucket_lengths:
            return self.lengths
        if longest is None:
            longest = self._longest(self._order.indices(batch_index, 0, self._global_batch_size))
        return packing.field_lengths(longest, self.lengths)

    def __iter__(self) -> "TrainData":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        out = self.batch(self._next_batch)
        self._next_batch += 1
        return out

    def get_state(self) -> dict[str, int]:
        """The iterator position, JSON-serialisable, the same on every host."""
        state = {
            "next_batch": self._next_batch,
            "global_batch_size": self._global_batch_size,
            "seed": self._seed,
            "num_examples": self.num_examples,
        }
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
            raise UserError(
                f"data iterator state {state!r} is malformed (needs integer {', '.join(_STATE_KEYS)}); "
                "the checkpoint may be damaged"
            )
        if state["num_examples"] != self.num_examples:
            raise UserError(
                f"the training data changed since the checkpoint: it had {state['num_examples']} "
                f"examples, now {self.num_examples}; restore the data or start a new workdir"
            )
        if state["seed"] != self._seed:
            raise UserError(
                f"the data order changed since the checkpoint: seed {state['seed']} then, {self._seed} "
                "now; resume with the same --config.seed or start a new workdir"
            )
        if state["global_batch_size"] != self._global_batch_size:
            raise UserError(
                f"the checkpoint was written with global batch size {state['global_batch_size']}, "
                f"now {self._global_batch_size}; resume with the same --config.batch_size"
            )
        if state.get(_ORDER_KEY) != self._order.fingerprint:
            raise UserError(
                "the mixture (rates, sources or data.one_source_batches) changed since the checkpoint; "
                "resume with the same data settings or start a new workdir"
            )
        if state["next_batch"] < 0:
            raise UserError(
                f"data iterator state has a negative next_batch {state['next_batch']}; the checkpoint "
                "may be damaged"
            )
        self._next_batch = state["next_batch"]


def measure_examples_per_second(data: TrainData, num_batches: int) -> float:
    """Examples/s of `next(data)` over `num_batches` batches (the state is restored after)."""
    state = data.get_state()
    start = time.perf_counter()
    rows = sum(len(next(data)["has_negative"]) for _ in range(num_batches))
    elapsed = time.perf_counter() - start
    data.set_state(state)
    return rows / elapsed
