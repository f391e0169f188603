"""The one description of a training batch: its fields, their lengths, shapes and types.

The input pipeline produces it, the AOT path compiles against it without
reading data, and preparation sizes its records by it:

    {query,positive,negative}_ids    int32 [B, L_field]   packed token ids
    {query,positive,negative}_mask   int32 [B, L_field]   1 on bos..eos
    has_negative                     int32 [B]            0 where the negative is padding
    query_hash, positive_hash,       int32 [B]            IDENTITY_FEATURES (Gemini NCE)
    example_id
    teacher                          float32 [B, D]       only with data.teachers

L_field is `text_lengths(...)[field]` (or a smaller bucket with
`data.bucket_lengths`). A batch with no hard negative at all leaves the two
`negative_*` arrays out, so that the train step skips their forward pass.
"""

from typing import Any

import numpy as np

from gecko_jax.errors import UserError

TEXT_FIELDS = ("query", "positive", "negative")
# Per-example int32 fingerprints that let a loss mask false negatives (Gemini
# NCE): equal values mean the same formatted query, the same formatted
# positive, or the same example id.
IDENTITY_FEATURES = ("query_hash", "positive_hash", "example_id")


def text_lengths(data_config: Any) -> dict[str, int]:
    """Tokens per text of each field, special tokens included, from `data.max_length` and
    `data.query_max_length`.

    Raises:
        UserError: a length leaves no room for text between the 2 special tokens.
    """
    max_length = int(data_config.max_length)
    if max_length < 3:
        raise UserError(
            f"--config.data.max_length={max_length} leaves no room for text after the 2 special "
            "tokens; use 3 or more"
        )
    query_max_length = int(data_config.query_max_length) or max_length
    if query_max_length < 3:
        raise UserError(
            f"--config.data.query_max_length={query_max_length} leaves no room for text; "
            "use 3 or more (0 = data.max_length)"
        )
    return {"query": query_max_length, "positive": max_length, "negative": max_length}


def shapes(
    rows: int, lengths: dict[str, int], teacher_width: int = 0
) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Each field's (shape, dtype) in a batch of `rows` examples with all fields present."""
    out = {}
    for field in TEXT_FIELDS:
        for part in ("ids", "mask"):
            out[f"{field}_{part}"] = ((rows, lengths[field]), np.int32)
    for name in ("has_negative",) + IDENTITY_FEATURES:
        out[name] = ((rows,), np.int32)
    if teacher_width:
        out["teacher"] = ((rows, teacher_width), np.float32)
    return out
