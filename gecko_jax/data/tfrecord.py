"""Training examples stored as TFRecord files of `tf.train.Example` protos.

The same schema as `jsonl.py`, one proto per example: the text fields and
`id` as one-element `bytes_list` features (UTF-8), `symmetric` as a
one-element `int64_list` (0 or 1). Absent optional fields are simply not in
the proto. The same validation rules apply, and a bad record is reported as
`PATH: record N: ...` (N counts from 1) before training starts.
"""

import os
from typing import Iterable, Iterator

from absl import logging
import tensorflow as tf

from gecko_jax.data import jsonl
from gecko_jax.errors import UserError


def is_tfrecord(path: str) -> bool:
    """Whether a training file is read as TFRecord: its name contains .tfrec (.tfrecord, shards too)."""
    return ".tfrec" in os.path.basename(path)


def to_proto(example: jsonl.Example) -> bytes:
    """Serializes one validated example as a `tf.train.Example`."""
    feature = {}
    for key in jsonl.REQUIRED_TEXT_FIELDS + jsonl.OPTIONAL_TEXT_FIELDS:
        if key in example:
            feature[key] = tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[example[key].encode("utf-8")])
            )
    if "id" in example:
        feature["id"] = tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[str(example["id"]).encode("utf-8")])
        )
    if "symmetric" in example:
        feature["symmetric"] = tf.train.Feature(
            int64_list=tf.train.Int64List(value=[int(example["symmetric"])])
        )
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tfrecord(path: str, examples: Iterable[jsonl.Example]) -> None:
    """Writes examples to one TFRecord file."""
    with tf.io.TFRecordWriter(path) as writer:
        for example in examples:
            writer.write(to_proto(example))


def _from_proto(serialized: bytes) -> dict:
    """Decodes a proto into a JSON-like dict for `jsonl.validate_example`."""
    proto = tf.train.Example.FromString(serialized)
    obj = {}
    for key, feature in proto.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        if len(values) != 1:
            raise ValueError(f'feature "{key}" must hold exactly one value, got {len(values)}')
        value = values[0]
        if key == "symmetric":
            if kind != "int64_list" or value not in (0, 1):
                raise ValueError('feature "symmetric" must be an int64 0 or 1')
            obj[key] = bool(value)
        elif kind == "bytes_list":
            try:
                obj[key] = value.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f'feature "{key}" is not valid UTF-8 (byte {e.start} of the value)'
                ) from None
        else:
            obj[key] = value
    return obj


def read_tfrecord(path: str, also_required: tuple[str, ...] = ()) -> list[jsonl.Example]:
    """Reads and validates every example of one TFRecord file.

    Args:
        path: the file.
        also_required: optional fields every record must have.

    Returns:
        The examples in file order; records with an empty query or positive
        are dropped and counted in one warning, like JSONL lines.

    Raises:
        UserError: the file is missing, not TFRecord, or has a bad record.
    """
    return list(iter_tfrecord(path, also_required))


def iter_tfrecord(path: str, also_required: tuple[str, ...] = ()) -> Iterator[jsonl.Example]:
    """Yields the validated examples of one TFRecord file, reading it as it goes.

    Args:
        path: the file.
        also_required: optional fields every record must have.

    Yields:
        The examples in file order (see `read_tfrecord`).

    Raises:
        UserError: as `read_tfrecord`, when the reader reaches the fault.
    """
    if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
        raise UserError(f"{path}: training file not found; check the path in --config.data.train_files")
    count, dropped = 0, jsonl.DropCounter(path, "record")
    try:
        for number, serialized in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator(), start=1):
            try:
                obj = _from_proto(serialized)
            except Exception as e:  # pylint: disable=broad-except
                # A proto that does not parse raises a protobuf-specific DecodeError.
                raise UserError(
                    f"{path}: record {number}: not a tf.train.Example of the training schema "
                    f"({e}); write records with gecko_jax.data.tfrecord.write_tfrecord"
                ) from None
            try:
                example = jsonl.validate_example(obj, dropped, number, also_required)
            except ValueError as e:
                raise UserError(f"{path}: record {number}: {e}") from None
            if example is not None:
                count += 1
                yield example
    except tf.errors.DataLossError:
        raise UserError(
            f"{path}: not a TFRecord file or truncated (corrupted record after {count} "
            "examples); write it again"
        ) from None
    dropped.warn()
    if not count:
        raise UserError(f"{path}: no examples in this TFRecord file")
    logging.info("%s: %d examples", path, count)
