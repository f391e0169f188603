"""Tests for gecko_jax.data.packing."""

import numpy as np
import pytest

from gecko_jax.data.packing import pack
from gecko_jax.errors import UserError


def test_pack_adds_bos_eos_truncates_and_pads():
    ids, mask = pack([[5, 6, 7, 8], [], [9]], max_length=5, bos_id=1, eos_id=2,
                     pad_id=0)
    np.testing.assert_array_equal(
        ids, [[1, 5, 6, 7, 2], [1, 2, 0, 0, 0], [1, 9, 2, 0, 0]])
    np.testing.assert_array_equal(
        mask, [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    assert ids.dtype == np.int32 and mask.dtype == np.int32


def test_pack_empty_batch_and_bad_length():
    ids, mask = pack([], max_length=4, bos_id=1, eos_id=2, pad_id=0)
    assert ids.shape == mask.shape == (0, 4)
    with pytest.raises(UserError, match="max_length"):
        pack([[3]], max_length=1, bos_id=1, eos_id=2, pad_id=0)
