"""Stored teacher vectors for distillation, keyed by example id.

A store is a folder written by `training.teacher_embedding.write_store`
(`data_pipelines/teacher_vectors.py` runs it on a config's data):

    vectors.npy   float32 [N, D], read as a memory map (no full load)
    ids.txt       the example id of each row, one per line
    meta.json     {"model": SPEC, "dim": D, "count": N, "prompt": ...}

Rows are keyed by `example_key`: `SOURCE/ID` for an example with an `id`,
else `SOURCE#ROW` (its row within the source), SOURCE being the name the
input pipeline gives it (`train_files`, or the mixture name such as `squad`).
The pipeline fingerprints the same string into each batch's `example_id`, so
`training.teacher_batches` can check every row it attaches.

Jasper/Stella distil from several teachers at once; each teacher is its own
store (`training.teacher_batches` combines them).
"""

import json
import os
from typing import Any, Sequence

import numpy as np

from gecko_jax.data import mixtures
from gecko_jax.data import records
from gecko_jax.errors import UserError

VECTORS_FILE = "vectors.npy"
IDS_FILE = "ids.txt"
META_FILE = "meta.json"


class TeacherStore:
    """Read access to one teacher's vectors."""

    def __init__(self, folder: str):
        """Opens a store.

        Args:
          folder: the store folder.

        Raises:
          UserError: the folder is not a complete store.
        """
        paths = [os.path.join(folder, name) for name in (VECTORS_FILE, IDS_FILE, META_FILE)]
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise UserError(
                f"{folder} is not a teacher store (missing {', '.join(missing)}); "
                "write one with data_pipelines/teacher_vectors.py"
            )
        self.folder = folder
        with open(paths[2]) as f:
            self.meta = json.load(f)
        self.vectors = np.load(paths[0], mmap_mode="r")
        with open(paths[1], encoding="utf-8") as f:
            ids = f.read().splitlines()
        if len(ids) != self.vectors.shape[0]:
            raise UserError(
                f"{folder}: {len(ids)} ids but {self.vectors.shape[0]} vectors; the "
                "store is incomplete, write it again"
            )
        self._row = {example_id: row for row, example_id in enumerate(ids)}

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def rows(self, example_ids: Sequence[str]) -> np.ndarray:
        """int64 row of each example id, in the order asked.

        Raises:
          UserError: an id has no vector here (the store was written from
            other training data).
        """
        try:
            return np.asarray([self._row[str(i)] for i in example_ids], np.int64)
        except KeyError as err:
            raise UserError(
                f"example id {err.args[0]!r} has no vector in teacher store {self.folder}; write "
                f"it from this run's data: python data_pipelines/teacher_vectors.py "
                f"--model={self.meta.get('model', 'SPEC')} --config=CONFIG --output={self.folder}"
            ) from None

    def lookup(self, example_ids: Sequence[str]) -> np.ndarray:
        """float32 [len(example_ids), D] in the order asked (raises as `rows`)."""
        return np.asarray(self.vectors[self.rows(example_ids)], np.float32)


def example_key(source: str, example: dict, row: int) -> str:
    """The id of an example within the training data, as stores and batches use it.

    Args:
      source: the source name (`mixtures.Source.name`).
      example: the example dict.
      row: its position within the source.

    Returns:
      `source/id`, or `source#row` when the example has no id.
    """
    return records.example_key(source, example.get("id"), row)


def training_queries(data_config: Any) -> tuple[list[str], list[str]]:
    """The keys and query texts of all training examples, in pipeline order.

    Args:
      data_config: the `data` config section (`train_files` or `mixture`).

    Returns:
      (keys, queries), one entry per example, sources concatenated in order.

    Raises:
      UserError: two examples share a key, or what loading the data raises.
    """
    keys, queries = [], []
    for source in mixtures.load_mixture(data_config):
        for row, example in enumerate(source.examples):
            keys.append(example_key(source.name, example, row))
            queries.append(example["query"])
    if len(set(keys)) != len(keys):
        raise UserError("example ids repeat within a data source; give every example a unique `id`")
    return keys, queries
