"""Tests for gecko_jax.data.packing."""

import numpy as np
import pytest

from gecko_jax.data.packing import bucket_length, field_lengths, length_buckets, pack
from gecko_jax.errors import UserError


def test_pack_adds_bos_eos_truncates_and_pads():
    ids, mask = pack([[5, 6, 7, 8], [], [9]], max_length=5, bos_id=1, eos_id=2, pad_id=0)
    np.testing.assert_array_equal(ids, [[1, 5, 6, 7, 2], [1, 2, 0, 0, 0], [1, 9, 2, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    assert ids.dtype == np.int32 and mask.dtype == np.int32


def test_pack_empty_batch_and_bad_length():
    ids, mask = pack([], max_length=4, bos_id=1, eos_id=2, pad_id=0)
    assert ids.shape == mask.shape == (0, 4)
    with pytest.raises(UserError, match="max_length"):
        pack([[3]], max_length=1, bos_id=1, eos_id=2, pad_id=0)


def test_length_buckets_end_at_max_length_and_bucket_is_smallest_that_fits():
    assert length_buckets(128) == [8, 16, 24, 32, 48, 64, 96, 128]
    assert length_buckets(100) == [8, 16, 24, 32, 48, 64, 96, 100]
    assert length_buckets(40) == [8, 16, 24, 32, 40]
    assert length_buckets(512)[-3:] == [256, 384, 512]
    buckets = length_buckets(128)
    assert [bucket_length(n, buckets) for n in (2, 8, 9, 33, 97, 128)] == [8, 8, 16, 48, 128, 128]


def test_field_lengths_give_positives_and_negatives_one_length():
    limits = {"query": 48, "positive": 128, "negative": 128}
    assert field_lengths({"query": 20, "positive": 30, "negative": 70}, limits) == {
        "query": 24,
        "positive": 96,
        "negative": 96,
    }
    assert field_lengths({"query": 60, "positive": 300, "negative": 2}, limits) == {
        "query": 48,
        "positive": 128,
        "negative": 128,
    }
