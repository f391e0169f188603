"""Reading a prepared source (`prepare.py`) by example index.

Opening one costs the same for ten thousand examples or a billion: meta.json
is read, each ArrayRecord shard is opened for random access (each host reads
only the records of its own rows), and the lengths tables are memory-mapped,
so a host's memory holds only the pages of the rows it touches.

The shards are read with ArrayRecord's own reader, a batch's positions in one
call per shard from the calling thread. Grain's `ArrayRecordDataSource` does
the same through a new thread pool on every call, and the records those
short-lived threads allocate fragmented the heap: its resident memory grew by
half a gigabyte over 100 random batches of a 1M-example shard, against 30 MB
with the reader called directly.
"""

import json
import os
from typing import Any, Mapping, Sequence

from array_record.python import array_record_module
from etils import epath
import numpy as np

from gecko_jax.data import batch_spec
from gecko_jax.data import prepare
from gecko_jax.data import records
from gecko_jax.errors import UserError

# Random access: no read-ahead past the record asked for.
_READER_OPTIONS = "readahead_buffer_size:0"


def read_meta(folder: str) -> dict[str, Any] | None:
    """The meta.json of a complete prepared folder, or None when there is none."""
    path = epath.Path(folder, prepare.META_FILE)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


class PreparedSource:
    """One prepared source, read by row.

    Attributes:
        folder: the prepared folder.
        name: the source's name.
        num_examples: its examples.
        meta: its meta.json.
    """

    def __init__(self, folder: str, expected_settings: Mapping[str, Any] | None = None):
        """Opens a prepared folder.

        Args:
            folder: written by `prepare.write_shard` and `prepare.write_meta`.
            expected_settings: `prepare.settings` of the run; a folder prepared
                with other settings (vocabulary, format, lengths) is refused.

        Raises:
            UserError: the folder is not a complete prepared source, or was
                prepared for other settings.
        """
        if "://" in folder:
            raise UserError(
                f"{folder}: ArrayRecord reads local files only; mount the bucket with Cloud Storage "
                "FUSE (gcsfuse) and give the mounted folder"
            )
        meta = read_meta(folder)
        if meta is None:
            raise UserError(
                f"{folder}: not a prepared data folder (no readable {prepare.META_FILE}); prepare it "
                "with data_pipelines/prepare_data.py"
            )
        if meta.get("format_version") != prepare.FORMAT_VERSION:
            raise UserError(
                f"{folder}: prepared by another version of gecko_jax (format "
                f"{meta.get('format_version')}, this one reads {prepare.FORMAT_VERSION}); prepare it again"
            )
        if expected_settings is not None:
            differ = [k for k in ("vocabulary", "format", "lengths") if meta.get(k) != expected_settings[k]]
            if differ:
                wanted = "; ".join(f"{k} {meta.get(k)} there, {expected_settings[k]} here" for k in differ)
                raise UserError(
                    f"{folder}: prepared for other settings ({wanted}); prepare it again with this "
                    "config's model.vocab, data.format and data lengths"
                )
        self.folder, self.meta = folder, meta
        self.name = meta["source"]
        self.num_examples = int(meta["num_examples"])
        shards = meta["shards"]
        self._readers = []
        for shard in shards:
            reader = array_record_module.ArrayRecordReader(
                os.path.join(folder, f"{shard['file']}.array_record"), _READER_OPTIONS
            )
            if reader.num_records() != shard["examples"]:
                raise UserError(
                    f"{folder}: shard {shard['file']} holds {reader.num_records()} records but "
                    f"meta.json says {shard['examples']}; the folder is damaged, prepare it again"
                )
            self._readers.append(reader)
        sizes = np.array([s["examples"] for s in shards], dtype=np.int64)
        self._shard_ends = np.cumsum(sizes)
        self._shard_starts = self._shard_ends - sizes
        self._lengths = [
            np.load(os.path.join(folder, f"{s['file']}.lengths.npy"), mmap_mode="r") for s in shards
        ]

    def _by_shard(self, rows: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(shard, positions in `rows`, rows within the shard) for each shard that `rows` touches."""
        shards = np.searchsorted(self._shard_ends, rows, side="right")
        return [
            (int(shard), chosen, rows[chosen] - self._shard_starts[shard])
            for shard in np.unique(shards)
            for chosen in [np.flatnonzero(shards == shard)]
        ]

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        """Stored (query, positive, negative) lengths of rows, int32 [n, 3]."""
        out = np.empty((len(rows), 3), np.int32)
        for shard, chosen, local in self._by_shard(np.asarray(rows)):
            out[chosen] = self._lengths[shard][local]
        return out

    def read(self, rows: Sequence[int], padded: Mapping[str, int], pad_id: int) -> dict[str, np.ndarray]:
        """The model arrays of some rows (see `records.decode_batch`)."""
        rows = np.asarray(rows)
        found = [b""] * len(rows)
        for shard, chosen, local in self._by_shard(rows):
            for position, record in zip(chosen, self._readers[shard].read(local.tolist())):
                found[position] = record
        return records.decode_batch(found, rows, self.name, padded, pad_id)

    def log_line(self) -> str:
        """The source's size and how often its texts reach their length limit.

        A text at its limit was cut, or is exactly that long.
        """
        shards = self.meta["shards"]
        count = sum(s["examples"] for s in shards)
        with_negative = sum(s["with_negative"] for s in shards)
        share = {
            k: sum(s["at_limit"][k] for s in shards) / max(count if k != "negative" else with_negative, 1)
            for k in batch_spec.TEXT_FIELDS
        }
        # A missing negative has length 0, never the limit, so its share is over examples with one.
        return (
            f"{self.name}: {count} examples, {with_negative} with a hard negative; "
            "at the length limit (cut): " + ", ".join(f"{k} {share[k]:.1%}" for k in batch_spec.TEXT_FIELDS)
        )
