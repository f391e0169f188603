"""One prepared training example as a record of int32 words, and batches of them.

A record holds an example after formatting, tokenization and truncation:

    [query_length, positive_length, negative_length,
     query_hash, positive_hash, example_id, has_id,
     query ids..., positive ids..., negative ids...]

Each text is its packed sequence (bos, the tokens that fit, eos) without
padding, so a record costs what the example's tokens cost and the mask is a
prefix of ones of the stored length; an example without a negative stores
length 0. The hashes are the IDENTITY_FEATURES a loss uses to mask false
negatives (Gemini NCE): crc32 of the formatted query, of the formatted
positive, and of `SOURCE/ID`. An example without an id (`has_id` 0) is
named by its row in its source, `SOURCE#ROW`, which the reader knows and the
writer may not (a Beam worker sees one input file), so the reader fills it in.
"""

from typing import Mapping, Sequence
import zlib

import numpy as np

from gecko_jax.data.batch_spec import IDENTITY_FEATURES
from gecko_jax.data.batch_spec import TEXT_FIELDS

_HEADER = len(TEXT_FIELDS) + len(IDENTITY_FEATURES) + 1


def text_fingerprint(text: str) -> int:
    """crc32 of a text as int32: stable across processes and hosts, unlike hash()."""
    return zlib.crc32(text.encode("utf-8")) - (1 << 31)


def example_key(source: str, example_id: str | int | None, row: int) -> str:
    """The name of an example within the training data: `SOURCE/ID`, or `SOURCE#ROW` without an id."""
    return f"{source}#{row}" if example_id is None else f"{source}/{example_id}"


def encode(
    sequences: Mapping[str, np.ndarray], query_hash: int, positive_hash: int, example_id: int | None
) -> bytes:
    """Serializes one example.

    Args:
        sequences: TEXT_FIELDS -> int32 packed ids without padding (an empty
            array for a missing negative).
        query_hash: `text_fingerprint` of the formatted query.
        positive_hash: `text_fingerprint` of the formatted positive.
        example_id: `text_fingerprint` of `example_key` for an example with an
            id, else None.

    Returns:
        The record's bytes.
    """
    header = [len(sequences[k]) for k in TEXT_FIELDS]
    header += [query_hash, positive_hash, example_id or 0, example_id is not None]
    return np.concatenate(
        [np.asarray(header, np.int32)] + [np.asarray(sequences[k], np.int32) for k in TEXT_FIELDS]
    ).tobytes()


def decode_batch(
    records: Sequence[bytes], rows: Sequence[int], source: str, padded: Mapping[str, int], pad_id: int
) -> dict[str, np.ndarray]:
    """Pads a batch of records to the model's arrays.

    Args:
        records: the records, one per example.
        rows: each example's row within `source`, for `SOURCE#ROW` ids.
        source: the source's name.
        padded: TEXT_FIELDS -> length to pad to, at least the longest
            stored sequence of that field.
        pad_id: fills the padding.

    Returns:
        `{query,positive,negative}_{ids,mask}` int32 [n, padded[k]],
        `has_negative` and IDENTITY_FEATURES int32 [n].
    """
    count = len(records)
    out = {}
    for key in TEXT_FIELDS:
        out[f"{key}_ids"] = np.full((count, padded[key]), pad_id, np.int32)
        out[f"{key}_mask"] = np.zeros((count, padded[key]), np.int32)
    identity = np.empty((count, len(IDENTITY_FEATURES)), np.int32)
    for i, (record, row) in enumerate(zip(records, rows)):
        words = np.frombuffer(record, np.int32)
        start = _HEADER
        for k, key in enumerate(TEXT_FIELDS):
            length = int(words[k])
            out[f"{key}_ids"][i, :length] = words[start : start + length]
            out[f"{key}_mask"][i, :length] = 1
            start += length
        identity[i] = words[len(TEXT_FIELDS) : _HEADER - 1]
        if not words[_HEADER - 1]:
            identity[i, 2] = text_fingerprint(example_key(source, None, int(row)))
    out["has_negative"] = (out["negative_mask"][:, 0] > 0).astype(np.int32)
    for k, key in enumerate(IDENTITY_FEATURES):
        out[key] = identity[:, k].copy()
    return out
