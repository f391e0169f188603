"""Stored teacher vectors for distillation, keyed by example id.

A store is a folder written by `data_pipelines/teacher_vectors.py`:

    vectors.npy   float32 [N, D], read as a memory map (no full load)
    ids.txt       the example id of each row, one per line
    meta.json     {"model": SPEC, "dim": D, "count": N, "prompt": ...}

Jasper/Stella distil from several teachers at once; each teacher is its own
store, and `TeacherStore.lookup_many` lays their rows side by side in the
order given, which is the `teacher` batch array that `losses.jasper` splits
by `loss.jasper_teacher_dims`.
"""

import json
import os
from typing import Sequence

import numpy as np

from gecko_jax.errors import UserError

VECTORS_FILE = "vectors.npy"
IDS_FILE = "ids.txt"
META_FILE = "meta.json"


class TeacherStore:
    """Read access to one teacher's vectors."""

    def __init__(self, folder: str):
        paths = [os.path.join(folder, name) for name in (VECTORS_FILE, IDS_FILE, META_FILE)]
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise UserError(f"{folder} is not a teacher store (missing {', '.join(missing)}); "
                            "write one with data_pipelines/teacher_vectors.py")
        self.folder = folder
        with open(paths[2]) as f:
            self.meta = json.load(f)
        self.vectors = np.load(paths[0], mmap_mode="r")
        with open(paths[1], encoding="utf-8") as f:
            ids = f.read().splitlines()
        if len(ids) != self.vectors.shape[0]:
            raise UserError(f"{folder}: {len(ids)} ids but {self.vectors.shape[0]} vectors; the "
                            "store is incomplete, write it again")
        self._row = {example_id: row for row, example_id in enumerate(ids)}

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def lookup(self, example_ids: Sequence[str]) -> np.ndarray:
        """float32 [len(example_ids), D] in the order asked."""
        try:
            rows = [self._row[str(i)] for i in example_ids]
        except KeyError as err:
            raise UserError(f"example id {err.args[0]!r} has no vector in {self.folder}; write the "
                            "store from the same training data") from None
        return np.asarray(self.vectors[np.asarray(rows, np.int64)], np.float32)


def lookup_many(stores: Sequence[TeacherStore], example_ids: Sequence[str]) -> np.ndarray:
    """Several teachers' vectors side by side: float32 [len(example_ids), sum of dims]."""
    return np.concatenate([store.lookup(example_ids) for store in stores], axis=1)
