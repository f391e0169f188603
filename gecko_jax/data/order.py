"""Which examples make up global batch k: pure functions of (seed, k).

Examples are indexed in the concatenation of all sources (source s owns rows
`offsets[s] .. offsets[s] + sizes[s]`). Two orders:

`PooledOrder` (no rates, mixed batches): one stream over all examples,

    stream = perm(0) ++ perm(1) ++ ...,  perm(e) = default_rng([seed, e]).permutation(N)
    global batch k = stream[k * G : (k + 1) * G]

`MixedOrder` (rates, optionally one source per batch): each source s has its
own stream `stream_s = perm_s(0) ++ perm_s(1) ++ ...` with
`perm_s(e) = default_rng([seed, s, e]).permutation(sizes[s])`. A sequence of
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

import numpy as np

MIX_TAG = 0x6D6978  # Separates the source draws from the per-source permutations.
BLOCK = 4096  # Units per block of source draws.


class _Permutations:
    """Epoch permutations of a few streams, caching the most recent ones."""

    def __init__(self, seed: int, keep: int):
        self._seed, self._keep, self._cache = seed, keep, {}

    def get(self, key: tuple[int, ...], size: int) -> np.ndarray:
        if key not in self._cache:
            if len(self._cache) >= self._keep:
                del self._cache[next(iter(self._cache))]
            self._cache[key] = np.random.default_rng([self._seed, *key]).permutation(size)
        return self._cache[key]


def _stream_positions(positions: np.ndarray, size: int, permutation) -> np.ndarray:
    """stream[positions] for a stream of concatenated epoch permutations of `size`."""
    epochs, offsets = np.divmod(positions, size)
    out = np.empty(len(positions), dtype=np.int64)
    for epoch in np.unique(epochs):
        rows = epochs == epoch
        out[rows] = permutation(int(epoch))[offsets[rows]]
    return out


class PooledOrder:
    """One permutation stream over all sources together."""

    fingerprint = None  # Checkpoints from before mixtures carry no order key.

    def __init__(self, seed: int, num_examples: int, global_batch_size: int):
        self._num_examples, self._global_batch_size = num_examples, global_batch_size
        self._permutations = _Permutations(seed, keep=2)

    def indices(self, batch_index: int, row_offset: int, rows: int) -> np.ndarray:
        """Example indices of rows [row_offset, row_offset + rows) of global batch `batch_index`."""
        start = batch_index * self._global_batch_size + row_offset
        return _stream_positions(np.arange(start, start + rows), self._num_examples,
                                 lambda e: self._permutations.get((e,), self._num_examples))

    def batch_source(self, batch_index: int) -> int | None:
        """The one source of a batch; None, as pooled batches mix sources."""
        del batch_index
        return None


class MixedOrder:
    """Per-source streams drawn by rate, per row or per whole batch."""

    def __init__(self, seed: int, sizes: list[int], rates: list[float], global_batch_size: int,
                 one_source_batches: bool):
        self._seed = seed
        self._sizes = np.asarray(sizes, dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(self._sizes)[:-1]])
        rates = np.asarray(rates, dtype=np.float64)
        self._cdf = np.cumsum(rates / rates.sum())
        self._cdf[-1] = 1.0  # No draw in [0, 1) may fall past the last source.
        self._global_batch_size = global_batch_size
        self._one_source = one_source_batches
        self._permutations = _Permutations(seed, keep=2 * len(sizes))
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
        size = int(self._sizes[source])
        local = _stream_positions(positions, size, lambda e: self._permutations.get((source, e), size))
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
