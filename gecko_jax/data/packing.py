"""Packs token ids into the fixed-shape arrays every model consumes.

A sequence is `[bos] + tokens[:max_length - 2] + [eos]`, padded with `pad_id`:
the way sentence-transformers truncates for BERT, so that our embeddings of a
long text match theirs. The TF feature converter does the same in tf.data and
is tested against this function. Batches of short texts are padded only to
the next of a few bucket lengths (`length_buckets`), so that a jitted model
compiles once per bucket and padding does not multiply the work.
"""

from typing import Mapping, Sequence

import numpy as np

from gecko_jax.errors import UserError


def pack(
    token_id_lists: Sequence[Sequence[int]],
    max_length: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Adds bos/eos, truncates and pads a batch of token id lists.

    Args:
      token_id_lists: N lists of bare token ids (no bos/eos).
      max_length: length of every output row, bos and eos included.
      bos_id: id put first in every row.
      eos_id: id put after the (truncated) tokens.
      pad_id: id filling the rest of the row.

    Returns:
      `(ids, mask)`, both int32 of shape [N, max_length]; `mask` is 1 on bos,
      tokens and eos and 0 on padding.

    Raises:
      UserError: `max_length` leaves no room for bos and eos.
    """
    if max_length < 2:
        raise UserError(f"max_length must be at least 2 (bos and eos); got {max_length}.")
    ids = np.full((len(token_id_lists), max_length), pad_id, dtype=np.int32)
    mask = np.zeros((len(token_id_lists), max_length), dtype=np.int32)
    for row, tokens in enumerate(token_id_lists):
        tokens = list(tokens)[: max_length - 2]
        n = len(tokens) + 2
        ids[row, :n] = [bos_id, *tokens, eos_id]
        mask[row, :n] = 1
    return ids, mask


def length_buckets(max_length: int) -> list[int]:
    """The padded lengths a batch may take, ascending, ending at `max_length`.

    Fine steps for short texts, where padding to the next power of two would
    nearly double the work, and halfway between powers of two above 64.
    """
    steps = [8, 16, 24, 32, 48] + [m * 2**k for k in range(6, 16) for m in (1, 1.5)]
    return [int(b) for b in steps if b < max_length] + [max_length]


def bucket_length(longest: int, buckets: Sequence[int]) -> int:
    """The smallest of the ascending `buckets` that holds `longest` tokens (the last if none)."""
    return next((b for b in buckets if b >= longest), buckets[-1])


def field_lengths(longest: Mapping[str, int], limits: Mapping[str, int]) -> dict[str, int]:
    """The padded length of each text field of a batch, from its longest text (bos/eos included).

    Each field gets the bucket of its longest text under its limit; positives
    and negatives get one length, the larger, so that they share a forward pass.
    """
    query = bucket_length(longest["query"], length_buckets(limits["query"]))
    document = bucket_length(
        max(longest["positive"], longest["negative"]), length_buckets(limits["positive"])
    )
    return {"query": query, "positive": document, "negative": document}
