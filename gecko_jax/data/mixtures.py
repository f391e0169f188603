"""What a config trains on: named sources with mixture rates, or the user's files.

`--config.data.mixture` lists entries `NAME` or `NAME:RATE`:

- `tiny`: the bundled set (`sources.tiny`);
- `fret`: FRet output, the JSONL/TFRecord files of `data.fret_files`, each
  row with its own `task`;
- every dataset of `tfds/datasets.py` (squad, snli, stsb, sick, banking77,
  trec, mr, stackoverflow, wikiqa, trecqa), read through the TFDS builder
  from `data.data_dir`, or from the official URLs with `data.download=True`,
  prepared once into `data.tfds_dir`.

Rates are relative (they need not sum to 1). Either every entry has a rate
or none does; without rates each source's rate is its number of examples, so
every example is equally likely. `data.train_files` (comma-separated JSONL
or TFRecord files; a name containing `.tfrec` is TFRecord) replaces the
mixture with one source. `data.train_files` or `data.fret_files` may instead
name one folder prepared by `data_pipelines/prepare_data.py`, read as is.

`source_inputs` describes the sources without reading them (what the
training pipeline prepares once and caches); `load_mixture` reads them into
memory (for the teacher lookup, which needs the raw texts).
"""

import dataclasses
import itertools
import os
from typing import Any, Callable, Iterable

from absl import logging
import tensorflow as tf

from gecko_jax.data import jsonl
from gecko_jax.data import sources
from gecko_jax.data import tfrecord
from gecko_jax.data.tfds import builder as tfds_builder
from gecko_jax.data.tfds import datasets
from gecko_jax.errors import UserError

SOURCE_NAMES = ("tiny", "fret") + tuple(datasets.DATASETS)
DEFAULT_TFDS_DIR = "~/tensorflow_datasets"


@dataclasses.dataclass(frozen=True)
class Source:
    """One source of the training stream.

    Attributes:
        name: the mixture name (or "train_files").
        rate: its relative sampling rate (> 0).
        examples: its examples, in a fixed order.
    """

    name: str
    rate: float
    examples: list[jsonl.Example]


@dataclasses.dataclass(frozen=True)
class SourceInput:
    """One source of the training stream, not yet read.

    Attributes:
        name: the mixture name (or "train_files").
        rate: its relative sampling rate, or None for "by its size".
        files: the files its examples are read from, in order (empty for
            the TFDS datasets, whose prepared files TFDS owns).
        identity: what besides the files decides its examples (reader and
            options), so that a change makes the cache prepare it again.
        read: streams its examples, in a fixed order.
        prepared_folder: a folder already prepared by
            `data_pipelines/prepare_data.py`, read as is; then `read` is None.
    """

    name: str
    rate: float | None
    files: tuple[str, ...]
    identity: str
    read: Callable[[], Iterable[jsonl.Example]] | None
    prepared_folder: str | None = None


def parse_mixture(mixture: Any) -> list[tuple[str, float | None]]:
    """Parses `data.mixture` into (name, rate or None) pairs.

    Args:
        mixture: a tuple of entries or a comma-separated string; a tuple's
            items may hold commas too (`--config.data.mixture="'a,b:2'"`).

    Returns:
        The entries in order.

    Raises:
        UserError: an unknown name, a bad rate, or rates on only some entries.
    """
    items = [mixture] if isinstance(mixture, str) else mixture
    entries = []
    for entry in (part.strip() for item in items for part in str(item).split(",")):
        if not entry:
            continue
        name, _, rate_text = entry.partition(":")
        name = name.strip()
        if name not in SOURCE_NAMES:
            raise UserError(
                f"unknown data source {name!r} in --config.data.mixture; known: {', '.join(SOURCE_NAMES)}"
            )
        rate = None
        if rate_text:
            try:
                rate = float(rate_text)
            except ValueError:
                rate = -1.0
            if not rate > 0 or rate == float("inf"):
                raise UserError(
                    f"mixture entry {entry!r}: the rate must be a positive number, as in 'squad:2.5'"
                )
        entries.append((name, rate))
    if not entries:
        raise UserError(
            "no training data: set --config.data.train_files=FILE.jsonl or --config.data.mixture "
            f"(names from {', '.join(SOURCE_NAMES)})"
        )
    if len({rate is None for _, rate in entries}) > 1:
        raise UserError(
            f"--config.data.mixture={','.join(n if r is None else f'{n}:{r:g}' for n, r in entries)} "
            "gives rates to only some entries; give every entry a rate or none"
        )
    return entries


def has_rates(mixture: Any) -> bool:
    """Whether the mixture entries carry explicit rates."""
    return any(rate is not None for _, rate in parse_mixture(mixture))


def read_files(paths_text: str, field: str, also_required: tuple[str, ...] = ()) -> list[jsonl.Example]:
    """Reads a comma-separated list of JSONL or TFRecord files, concatenated in order.

    Args:
        paths_text: e.g. "a.jsonl,b.tfrecord" or "fret/train-*.tfrecord"; blanks
            around commas are ignored, and a glob pattern stands for its
            matches in sorted order.
        field: the config field that named them, for errors.
        also_required: optional fields every row must have.

    Returns:
        All examples.
    """
    return list(iter_files(expand_files(paths_text, field), also_required))


def iter_files(paths: Iterable[str], also_required: tuple[str, ...] = ()) -> Iterable[jsonl.Example]:
    """Streams the examples of JSONL or TFRecord files, concatenated in order."""
    return itertools.chain.from_iterable(
        tfrecord.iter_tfrecord(path, also_required)
        if tfrecord.is_tfrecord(path)
        else jsonl.iter_jsonl(path, also_required)
        for path in paths
    )


def expand_files(paths_text: str, field: str) -> list[str]:
    """The files a comma-separated list of paths and glob patterns names, in order (see `read_files`)."""
    paths = []
    for entry in (p.strip() for p in paths_text.split(",")):
        if not any(c in entry for c in "*?["):
            paths += [entry] if entry else []
            continue
        matches = sorted(tf.io.gfile.glob(entry))
        if not matches:
            raise UserError(f"--config.data.{field}: the pattern {entry!r} matches no file")
        paths += matches
    if not paths:
        raise UserError(
            f"--config.data.{field}={paths_text!r} names no file; give comma-separated JSONL or "
            "TFRecord paths"
        )
    return paths


def load_source(name: str, data_config: Any) -> list[jsonl.Example]:
    """Loads one named source.

    Args:
        name: one of SOURCE_NAMES.
        data_config: the `data` config (`data_dir`, `tfds_dir`, `fret_files`,
            `download`, `squad_hard_negatives`).

    Returns:
        The source's examples.
    """
    if name == "tiny":
        return sources.tiny()
    if name == "fret":
        return read_files(_fret_files(data_config), "fret_files", also_required=("task",))
    if name not in datasets.DATASETS:
        raise UserError(
            f"unknown data source {name!r} in --config.data.mixture; known: {', '.join(SOURCE_NAMES)}"
        )
    examples = tfds_builder.load(
        name,
        data_config.data_dir,
        data_config.tfds_dir or DEFAULT_TFDS_DIR,
        allow_download=data_config.download,
    )
    if name == "squad" and not data_config.squad_hard_negatives:
        examples = [{k: v for k, v in e.items() if k not in ("negative", "negative_title")} for e in examples]
    return examples


def _fret_files(data_config: Any) -> str:
    if not data_config.fret_files:
        raise UserError(
            "the mixture names 'fret' but --config.data.fret_files is empty; give the FRet "
            "output files (JSONL or TFRecord, comma-separated)"
        )
    return data_config.fret_files


def _files_input(
    name: str, rate: float | None, paths_text: str, field: str, also_required: tuple[str, ...] = ()
) -> SourceInput:
    """A source read from the files (or the one prepared folder) that a config field names."""
    entries = [p.strip() for p in paths_text.split(",") if p.strip()]
    folders = [p for p in entries if os.path.isdir(p)]
    if folders:
        if len(entries) > 1:
            raise UserError(
                f"--config.data.{field} names the folder {folders[0]} among other entries; give one "
                "prepared folder alone (prepare all the files into it with data_pipelines/"
                "prepare_data.py), or files only"
            )
        return SourceInput(name, rate, (), "prepared", None, prepared_folder=folders[0])
    paths = tuple(expand_files(paths_text, field))
    return SourceInput(
        name, rate, paths, f"files:{','.join(also_required)}", lambda: iter_files(paths, also_required)
    )


def source_inputs(data_config: Any) -> list[SourceInput]:
    """The sources a config trains on, in order, without reading them.

    Args:
        data_config: the `data` config.

    Returns:
        A single "train_files" source when `train_files` is set, else one
        source per mixture entry.

    Raises:
        UserError: bad entries or file names.
    """
    if data_config.train_files:
        return [_files_input("train_files", 1.0, data_config.train_files, "train_files")]
    inputs = []
    for name, rate in parse_mixture(data_config.mixture):
        if name == "tiny":
            inputs.append(SourceInput(name, rate, (sources.bundled_path(),), "files:", sources.tiny))
        elif name == "fret":
            inputs.append(_files_input(name, rate, _fret_files(data_config), "fret_files", ("task",)))
        else:
            tfds_dir = os.path.abspath(os.path.expanduser(data_config.tfds_dir or DEFAULT_TFDS_DIR))
            identity = (
                f"tfds:{tfds_builder.BUILDER_NAME}/{name}:{tfds_builder.GeckoAcademic.VERSION}:{tfds_dir}:"
                f"squad_hard_negatives={bool(data_config.squad_hard_negatives)}"
            )
            inputs.append(SourceInput(name, rate, (), identity, lambda n=name: load_source(n, data_config)))
    return inputs


def load_mixture(data_config: Any) -> list[Source]:
    """Loads the training data a config asks for, with resolved rates.

    Args:
        data_config: the `data` config.

    Returns:
        The sources in order (a single "train_files" source when
        `train_files` is set).

    Raises:
        UserError: bad entries, missing data, or a source without examples.
    """
    for source in source_inputs(data_config):
        if source.prepared_folder is not None:
            raise UserError(
                f"{source.prepared_folder} is a prepared folder, which keeps tokens, not texts; give "
                "the JSONL/TFRecord files it was prepared from (teacher vectors embed the texts)"
            )
    if data_config.train_files:
        return [Source("train_files", 1.0, read_files(data_config.train_files, "train_files"))]
    loaded = []
    for name, rate in parse_mixture(data_config.mixture):
        examples = load_source(name, data_config)
        if not examples:
            raise UserError(
                f"data source {name!r} gave no examples; check its files or drop it from the mixture"
            )
        loaded.append(Source(name, float(len(examples)) if rate is None else rate, examples))
    total = sum(s.rate for s in loaded)
    logging.info("data: mixture %s", ", ".join(f"{s.name} {s.rate / total:.1%}" for s in loaded))
    return loaded
