"""The training input: a deterministic, resumable, host-sharded batch stream.

All examples are tokenized once through the SeqIO tasks (`tasks.py`) and held
in memory as numpy arrays. The order is then a pure function of the seed:

    stream = perm(0) ++ perm(1) ++ ...,  perm(e) = default_rng([seed, e]).permutation(N)
    global batch k = stream[k * G : (k + 1) * G]
    host p's rows  = global batch k [p * b : (p + 1) * b],  b = G / process_count

so every host computes the same global order without talking to the others,
the state of the iterator is just the next batch index, and a batch may span
the end of one epoch and the start of the next (no example is dropped).
Masks are stored as lengths (each mask is a prefix of ones) to halve memory.
"""

import zlib
from typing import Any

from absl import logging
import numpy as np

from gecko_jax.data import formats
from gecko_jax.data import sources
from gecko_jax.data import tasks
from gecko_jax.errors import UserError

_STATE_KEYS = ("next_batch", "global_batch_size", "seed", "num_examples")

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
    [global_batch_size // process_count, lengths[field]], and `has_negative`
    and the IDENTITY_FEATURES to int32 [global_batch_size // process_count].

    Attributes:
        num_examples: examples in one epoch (all sources together).
        max_length: tokens per positive/negative text, special tokens included.
        lengths: tokens per text of each field (queries may be shorter).
    """

    def __init__(self, data_config: Any, vocabulary: Any, global_batch_size: int, seed: int,
                 process_index: int = 0, process_count: int = 1):
        """Loads, formats and tokenizes all training data.

        Args:
            data_config: the `data` config (`train_files`, `mixture`,
                `data_dir`, `max_length`, `format`, `squad_file`, `snli_dir`).
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

        converter = tasks.DualEncoderFeatureConverter(vocabulary.bos_id, vocabulary.eos_id, vocabulary.pad_id)
        parts, identities = [], []
        for i, (name, examples) in enumerate(sources.load_examples(data_config, seed)):
            if not examples:
                raise UserError(f"data source {name!r} gave no examples; check its files or drop it from the mixture")
            task = tasks.register_task(tasks.task_name(f"train.{i}.{name}"), lambda ex=examples: ex, vocabulary, fmt)
            arrays = tasks.materialize(task, converter, self.lengths)
            _log_source(name, arrays)
            parts.append(arrays)
            identities.append(_identities(examples, fmt, name))
        data = {k: np.concatenate([p[k] for p in parts]) for k in tasks.MODEL_FEATURES}
        self.num_examples = len(data["has_negative"])
        self._ids = {k: data[f"{k}_ids"] for k in tasks.TEXT_FEATURES}
        self._lengths = {k: data[f"{k}_mask"].sum(axis=1, dtype=np.int32) for k in tasks.TEXT_FEATURES}
        self._has_negative = data["has_negative"]
        self._identity = {k: np.concatenate([part[k] for part in identities]) for k in IDENTITY_FEATURES}
        self._permutations = {}
        self._next_batch = 0
        logging.info("data: %d examples in all, global batch %d, %.2f steps per epoch", self.num_examples,
                     global_batch_size, self.num_examples / global_batch_size)

    def _permutation(self, epoch: int) -> np.ndarray:
        """The order of one epoch; the last two are cached, as a batch smaller than an epoch spans at most two."""
        if epoch not in self._permutations:
            if len(self._permutations) >= 2:
                del self._permutations[min(self._permutations)]
            self._permutations[epoch] = np.random.default_rng([self._seed, epoch]).permutation(self.num_examples)
        return self._permutations[epoch]

    def example_indices(self, batch_index: int) -> np.ndarray:
        """Indices (into the concatenated sources) of this host's rows of a batch.

        Args:
            batch_index: the global batch number k >= 0.

        Returns:
            int64 [host batch size].
        """
        start = batch_index * self._global_batch_size + self._row_offset
        epochs, offsets = np.divmod(np.arange(start, start + self._host_batch_size), self.num_examples)
        indices = np.empty(self._host_batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            rows = epochs == epoch
            indices[rows] = self._permutation(int(epoch))[offsets[rows]]
        return indices

    def batch(self, batch_index: int) -> dict[str, np.ndarray]:
        """This host's rows of global batch `batch_index` (does not move the iterator)."""
        indices = self.example_indices(batch_index)
        out = {}
        for k in tasks.TEXT_FEATURES:
            out[f"{k}_ids"] = self._ids[k][indices]
            positions = np.arange(self.lengths[k], dtype=np.int32)
            out[f"{k}_mask"] = (positions[None, :] < self._lengths[k][indices, None]).astype(np.int32)
        out["has_negative"] = self._has_negative[indices]
        for k in IDENTITY_FEATURES:
            out[k] = self._identity[k][indices]
        return out

    def __iter__(self) -> "TrainData":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        out = self.batch(self._next_batch)
        self._next_batch += 1
        return out

    def get_state(self) -> dict[str, int]:
        """The iterator position, JSON-serialisable, the same on every host."""
        return {"next_batch": self._next_batch, "global_batch_size": self._global_batch_size, "seed": self._seed,
                "num_examples": self.num_examples}

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
        if state["next_batch"] < 0:
            raise UserError(f"data iterator state has a negative next_batch {state['next_batch']}; the checkpoint "
                            "may be damaged")
        self._next_batch = state["next_batch"]


def _log_source(name: str, arrays: dict[str, np.ndarray]) -> None:
    """Logs one source's size, negatives and how often texts hit their length limit."""
    count = len(arrays["has_negative"])
    truncated = ", ".join(f"{k} {np.mean(arrays[f'{k}_mask'][:, -1]) if count else 0.0:.1%}"
                          for k in tasks.TEXT_FEATURES)
    logging.info("data: %s: %d examples, %d with a hard negative; truncated: %s", name, count,
                 int(arrays["has_negative"].sum()), truncated)
