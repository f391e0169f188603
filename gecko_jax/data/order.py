"""Which examples make up global batch k: pure functions of (seed, k).

Examples are indexed in the concatenation of all sources (source s owns rows
`offsets[s] .. offsets[s] + sizes[s]`). Two orders:

`PooledOrder` (no rates, mixed batches): one stream over all examples,

    stream = perm(0) ++ perm(1) ++ ...,  perm(e) = shuffle(N, seed_of(seed, e))
    global batch k = stream[k * G : (k + 1) * G]

`MixedOrder` (rates, optionally one source per batch): each source s has its
own stream `stream_s = perm_s(0) ++ perm_s(1) ++ ...` with
`perm_s(e) = shuffle(sizes[s], seed_of(seed, s, e))`.

`shuffle(n, seed)` is Grain's `index_shuffle`, a keyed bijection of
[0, n): any position of a permutation costs a few microseconds and no
permutation is ever built, so the order's memory does not grow with the data
(a billion examples would need 8 GB per materialised permutation). It takes
32-bit seeds and sizes, so a source holds at most 2**32 examples. A sequence of
units (rows of the global stream, or whole batches with one-source batches)
draws a source each, by rate: unit u takes source `searchsorted(cdf, r_u)`
with `r_u` the (u mod B)-th float of `default_rng([seed, MIX_TAG, u // B])`.
A unit of source s that is the j-th unit of s so far takes `stream_s[j]`
(rows), or a one-source batch takes `stream_s[j * G : (j + 1) * G]`.

Both are random access: batch k needs no replay of batches 0..k-1 (the
per-block source counts are kept as prefix sums), so the iterator state is
just k and a resumed run sees exactly the batches an uninterrupted one sees.
"""

import zlib

from grain.experimental import index_shuffle
import numpy as np

from gecko_jax.errors import UserError

MIX_TAG = 0x6D6978  # Separates the source draws from the per-source permutations.
BLOCK = 4096  # Units per block of source draws.


MAX_SOURCE_SIZE = 2**32  # index_shuffle's limit.


def _seed_of(*key: int) -> int:
    """A 32-bit seed that depends on every part of `key`."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint32)[0])


def _stream_positions(positions: np.ndarray, size: int, key: tuple[int, ...]) -> np.ndarray:
    """stream[positions] for the stream perm(key + (0,)) ++ perm(key + (1,)) ++ ... over [0, size)."""
    epochs, offsets = np.divmod(positions, size)
    out = np.empty(len(positions), dtype=np.int64)
    for epoch in np.unique(epochs):
        rows = np.flatnonzero(epochs == epoch)
        seed = _seed_of(*key, int(epoch))
        out[rows] = [index_shuffle(int(i), max_index=size - 1, seed=seed, rounds=4) for i in offsets[rows]]
    return out


def _check_sizes(sizes) -> None:
    if max(sizes) > MAX_SOURCE_SIZE:
        raise UserError(
            f"a data source of {max(sizes)} examples exceeds the {MAX_SOURCE_SIZE} a source may hold; "
            "split it into several sources of a mixture"
        )


class PooledOrder:
    """One permutation stream over all sources together."""

    fingerprint = None  # Checkpoints from before mixtures carry no order key.

    def __init__(self, seed: int, num_examples: int, global_batch_size: int):
        _check_sizes([num_examples])
        self._seed, self._num_examples, self._global_batch_size = seed, num_examples, global_batch_size

    def indices(self, batch_index: int, row_offset: int, rows: int) -> np.ndarray:
        """Example indices of rows [row_offset, row_offset + rows) of global batch `batch_index`."""
        start = batch_index * self._global_batch_size + row_offset
        return _stream_positions(np.arange(start, start + rows), self._num_examples, (self._seed,))

    def batch_source(self, batch_index: int) -> int | None:
        """The one source of a batch; None, as pooled batches mix sources."""
        del batch_index
        return None


class MixedOrder:
    """Per-source streams drawn by rate, per row or per whole batch."""

    def __init__(
        self,
        seed: int,
        sizes: list[int],
        rates: list[float],
        global_batch_size: int,
        one_source_batches: bool,
    ):
        self._seed = seed
        self._sizes = np.asarray(sizes, dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(self._sizes)[:-1]])
        rates = np.asarray(rates, dtype=np.float64)
        self._cdf = np.cumsum(rates / rates.sum())
        self._cdf[-1] = 1.0  # No draw in [0, 1) may fall past the last source.
        self._global_batch_size = global_batch_size
        self._one_source = one_source_batches
        _check_sizes(sizes)
        self._prefix_counts = [np.zeros(len(sizes), dtype=np.int64)]  # Units of each source before block b.
        self._blocks = {}
        description = f"{'batch' if one_source_batches else 'row'}:{sizes}:{rates.tolist()}"
        # Saved with the iterator state, so that resuming under another mixture is caught.
        self.fingerprint = zlib.crc32(description.encode("utf-8"))

    def _block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """(source of each unit, rank of each unit among its block's units of that source)."""
        if block not in self._blocks:
            if len(self._blocks) >= 2:
                del self._blocks[next(iter(self._blocks))]
            draws = np.random.default_rng([self._seed, MIX_TAG, block]).random(BLOCK)
            sources = np.searchsorted(self._cdf, draws, side="right")
            counts = np.bincount(sources, minlength=len(self._sizes))
            order = np.argsort(sources, kind="stable")
            ranks = np.empty(BLOCK, dtype=np.int64)
            ranks[order] = np.arange(BLOCK) - np.repeat(np.cumsum(counts) - counts, counts)
            self._blocks[block] = (sources, ranks, counts)
        return self._blocks[block][:2]

    def _counts_before(self, block: int) -> np.ndarray:
        while len(self._prefix_counts) <= block:
            b = len(self._prefix_counts) - 1
            self._block(b)
            self._prefix_counts.append(self._prefix_counts[-1] + self._blocks[b][2])
        return self._prefix_counts[block]

    def _sources_and_ranks(self, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each unit's source and how many earlier units drew the same source."""
        sources = np.empty(len(units), dtype=np.int64)
        ranks = np.empty(len(units), dtype=np.int64)
        blocks = units // BLOCK
        for block in np.unique(blocks):
            rows = blocks == block
            before = self._counts_before(int(block))
            block_sources, block_ranks = self._block(int(block))
            positions = units[rows] - block * BLOCK
            sources[rows] = block_sources[positions]
            ranks[rows] = before[sources[rows]] + block_ranks[positions]
        return sources, ranks

    def _take(self, source: int, positions: np.ndarray) -> np.ndarray:
        local = _stream_positions(positions, int(self._sizes[source]), (self._seed, source))
        return self._offsets[source] + local

    def indices(self, batch_index: int, row_offset: int, rows: int) -> np.ndarray:
        """Example indices of rows [row_offset, row_offset + rows) of global batch `batch_index`."""
        if self._one_source:
            (source,), (rank,) = self._sources_and_ranks(np.array([batch_index]))
            start = rank * self._global_batch_size + row_offset
            return self._take(int(source), np.arange(start, start + rows))
        start = batch_index * self._global_batch_size + row_offset
        sources, ranks = self._sources_and_ranks(np.arange(start, start + rows))
        out = np.empty(rows, dtype=np.int64)
        for source in np.unique(sources):
            chosen = sources == source
            out[chosen] = self._take(int(source), ranks[chosen])
        return out

    def batch_source(self, batch_index: int) -> int | None:
        """The one source of a batch with one-source batches, else None."""
        if not self._one_source:
            return None
        return int(self._sources_and_ranks(np.array([batch_index]))[0][0])
