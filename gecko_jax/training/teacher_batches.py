"""Attaches stored teacher vectors to every training batch (Jasper/Stella distillation).

`data.teachers` lists the teachers, each either a teacher-store folder
(written by `data_pipelines/teacher_vectors.py`) or an `Encoder` spec such as
`minilm`. A spec is embedded once, over the run's training queries, into
`WORKDIR/teachers/NAME` before training, and reused by later runs in that
workdir.

Every host batch then gets `teacher`, float32 [rows, sum of teacher widths]:
the rows of its examples from each store, made into one unit target by
`losses.jasper.teacher_targets` (each teacher normalised, concatenated, then
normalised again). The loss applies the same function again, which changes
nothing, so `loss.jasper_teacher_dims` is not needed with `data.teachers`.

Rows are matched through the pipeline's example order: a table built once
maps each example (index into the concatenated sources) to its row in every
store, and each batch's `example_indices` pick from it. As a guard against
the two drifting apart, the fingerprint of each looked-up key is compared
with the `example_id` the pipeline put in the batch.
"""

import dataclasses
import os
import re
import zlib
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np

from gecko_jax.data import teacher_store
from gecko_jax.errors import UserError
from gecko_jax.losses.jasper import teacher_targets
from gecko_jax.training.teacher_embedding import write_store

TEACHERS_DIR = "teachers"


def _fingerprints(keys: Sequence[str]) -> np.ndarray:
    # The pipeline's int32 `example_id`: crc32 of the key, shifted into int32.
    return np.array([zlib.crc32(k.encode("utf-8")) - (1 << 31) for k in keys], np.int32)


def _is_store(entry: str) -> bool:
    return os.path.isfile(os.path.join(entry, teacher_store.META_FILE))


def _spec_folder(spec: str, workdir: str) -> str:
    return os.path.join(workdir, TEACHERS_DIR, re.sub(r"[^A-Za-z0-9._-]+", "_", spec))


def _encoded_store(
    spec: str, workdir: str, keys: list[str], queries: list[str]
) -> teacher_store.TeacherStore:
    """The store of Encoder `spec` over this run's queries, in the workdir (written if absent)."""
    if "://" in workdir:
        raise UserError(
            f"data.teachers entry {spec!r} would be embedded into {workdir}, but teacher "
            "stores must be on a local disk; write one with "
            "data_pipelines/teacher_vectors.py and pass its folder"
        )
    folder = _spec_folder(spec, workdir)
    if _is_store(folder):
        store = teacher_store.TeacherStore(folder)
        if store.meta.get("model") == spec and store.meta.get("count") == len(keys):
            print(f"Teacher {spec!r}: reusing {folder}", flush=True)
            return store
    print(f"Teacher {spec!r}: embedding {len(queries)} training queries into {folder}", flush=True)
    return write_store(folder, spec, keys, queries)


@dataclasses.dataclass(frozen=True)
class Hosts:
    """This process's place in a multi-host job, and a barrier over all its processes.

    Attributes:
      index: this process's index.
      count: processes in the job.
      barrier: called with a name by every process; returns once all have called it.
    """

    index: int = 0
    count: int = 1
    barrier: Callable[[str], None] = lambda name: None


def open_teachers(
    entries: Sequence[str], data_config: Any, workdir: str, hosts: Hosts = Hosts()
) -> tuple[list[teacher_store.TeacherStore], list[str]]:
    """Opens (and if needed writes) the stores that `data.teachers` names.

    Args:
      entries: store folders or Encoder specs.
      data_config: the `data` section; gives the training examples.
      workdir: where specs are embedded.
      hosts: the job's processes; process 0 embeds the specs into the workdir
        (which every host sees) while the others wait, then they read them.

    Returns:
      (stores, keys): the stores in order and the key of every training
      example in pipeline order.

    Raises:
      UserError: what the stores raise.
    """
    keys, queries = teacher_store.training_queries(data_config)
    specs = [entry for entry in entries if not _is_store(entry)]
    if hosts.index == 0:
        for spec in specs:
            _encoded_store(spec, workdir, keys, queries)
    if specs and hosts.count > 1:
        hosts.barrier("gecko_jax_teacher_stores_written")
    stores = [
        teacher_store.TeacherStore(entry if _is_store(entry) else _spec_folder(entry, workdir))
        for entry in entries
    ]
    return stores, keys


class TeacherBatches:
    """The training iterator with `teacher` added to every batch.

    Everything else (`get_state`, `set_state`, `num_examples`, ...) is the
    wrapped iterator's, so checkpoints and resumption are unchanged.
    """

    def __init__(self, data: Any, stores: Sequence[teacher_store.TeacherStore], keys: Sequence[str]):
        """Builds the example -> store row tables.

        Args:
          data: a `pipeline.TrainData`.
          stores: the teachers, in order.
          keys: `teacher_store.example_key` of every example, in pipeline order.

        Raises:
          UserError: the keys do not cover the pipeline's examples, or a
            store lacks one of them.
        """
        if len(keys) != data.num_examples:
            raise UserError(
                f"the teacher lookup found {len(keys)} training examples but the input "
                f"pipeline has {data.num_examples}; check data.train_files / data.mixture"
            )
        self._data = data
        self._stores = list(stores)
        self._rows = [store.rows(keys) for store in self._stores]
        self._fingerprints = _fingerprints(keys)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._data, name)

    def __iter__(self) -> "TeacherBatches":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch_index = self._data.get_state()["next_batch"]
        batch = next(self._data)
        indices = self._data.example_indices(batch_index)
        if "example_id" in batch and not np.array_equal(batch["example_id"], self._fingerprints[indices]):
            raise UserError(
                "teacher vectors would go to the wrong examples: the input pipeline's "
                "example ids differ from the teacher lookup's; report this as a bug"
            )
        parts = [
            np.asarray(store.vectors[rows[indices]], np.float32)
            for store, rows in zip(self._stores, self._rows)
        ]
        batch["teacher"] = np.asarray(teacher_targets(parts), np.float32)
        return batch


def with_teachers(config: ml_collections.ConfigDict, data: Any, workdir: str, hosts: Hosts = Hosts()) -> Any:
    """`data` itself without `data.teachers`, else `TeacherBatches` over it.

    Args:
      config: the run config.
      data: the training iterator (`pipeline.TrainData`).
      workdir: the run's workdir.
      hosts: the job's processes.

    Returns:
      An iterator of host batches.

    Raises:
      UserError: as `open_teachers`, or a jasper_distill student whose width
        is not the teachers' total width.
    """
    entries = tuple(config.data.get("teachers", ()))
    if not entries:
        return data
    stores, keys = open_teachers(entries, config.data, workdir, hosts)
    width = sum(store.dim for store in stores)
    widths = " + ".join(f"{store.dim} ({store.meta.get('model', store.folder)})" for store in stores)
    print(f"Teacher vectors: {widths} = {width} per example", flush=True)
    student = config.model.projection_dim or config.model.hidden_size
    if config.loss.name == "jasper_distill" and student != width:
        raise UserError(
            f"the student gives {student}-d vectors but the teachers {width}-d targets; "
            f"set --config.model.projection_dim={width} (Jasper's FC1)"
        )
    return TeacherBatches(data, stores, keys)
