"""Reading a prepared source (`prepare.py`) by example index.

Opening one costs the same for ten thousand examples or a billion: meta.json
is read, the ArrayRecord shards are opened through Grain's
`ArrayRecordDataSource` (random access, each host reading only the records
of its own rows), and the lengths tables are memory-mapped, so a host's
memory holds only the pages of the rows it touches.
"""

import json
import os
from typing import Any, Mapping, Sequence

from etils import epath
import grain
import numpy as np

from gecko_jax.data import prepare
from gecko_jax.data import records
from gecko_jax.errors import UserError


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
        meta = read_meta(folder)
        if meta is None:
            raise UserError(f"{folder}: not a prepared data folder (no readable {prepare.META_FILE}); prepare it "
                            "with data_pipelines/prepare_data.py")
        if meta.get("format_version") != prepare.FORMAT_VERSION:
            raise UserError(f"{folder}: prepared by another version of gecko_jax (format "
                            f"{meta.get('format_version')}, this one reads {prepare.FORMAT_VERSION}); prepare it again")
        if expected_settings is not None:
            differ = [k for k in ("vocabulary", "format", "lengths") if meta.get(k) != expected_settings[k]]
            if differ:
                wanted = "; ".join(f"{k} {meta.get(k)} there, {expected_settings[k]} here" for k in differ)
                raise UserError(f"{folder}: prepared for other settings ({wanted}); prepare it again with this "
                                "config's model.vocab, data.format and data lengths")
        self.folder, self.meta = folder, meta
        self.name = meta["source"]
        self.num_examples = int(meta["num_examples"])
        shards = meta["shards"]
        paths = [os.fspath(epath.Path(folder, f"{s['file']}.array_record")) for s in shards]
        self._records = grain.sources.ArrayRecordDataSource(paths) if paths else None
        if self._records is not None and len(self._records) != self.num_examples:
            raise UserError(f"{folder}: the shards hold {len(self._records)} records but meta.json says "
                            f"{self.num_examples}; the folder is damaged, prepare it again")
        self._shard_ends = np.cumsum([s["examples"] for s in shards], dtype=np.int64)
        self._lengths = [_open_lengths(epath.Path(folder, f"{s['file']}.lengths.npy")) for s in shards]

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        """Stored (query, positive, negative) lengths of rows, int32 [n, 3]."""
        shards = np.searchsorted(self._shard_ends, rows, side="right")
        starts = self._shard_ends - [len(t) for t in self._lengths]
        out = np.empty((len(rows), 3), np.int32)
        for shard in np.unique(shards):
            chosen = shards == shard
            out[chosen] = self._lengths[shard][rows[chosen] - starts[shard]]
        return out

    def read(self, rows: Sequence[int], padded: Mapping[str, int], pad_id: int) -> dict[str, np.ndarray]:
        """The model arrays of some rows (see `records.decode_batch`)."""
        return records.decode_batch(self._records.__getitems__([int(r) for r in rows]), rows, self.name,
                                    padded, pad_id)

    def log_line(self) -> str:
        """The source's size and how often its texts reach their length limit (were cut, or are exactly that long)."""
        shards = self.meta["shards"]
        count = sum(s["examples"] for s in shards)
        with_negative = sum(s["with_negative"] for s in shards)
        share = {k: sum(s["at_limit"][k] for s in shards) / max(count if k != "negative" else with_negative, 1)
                 for k in records.TEXT_FEATURES}
        # A missing negative has length 0, never the limit, so its share is over examples with one.
        return (f"{self.name}: {count} examples, {with_negative} with a hard negative; at the length limit (cut): "
                + ", ".join(f"{k} {share[k]:.1%}" for k in records.TEXT_FEATURES))


def _open_lengths(path: epath.Path) -> np.ndarray:
    """A lengths table: memory-mapped when local, read whole otherwise."""
    if "://" in os.fspath(path):
        with path.open("rb") as f:
            return np.load(f)
    return np.load(os.fspath(path), mmap_mode="r")
