"""Philox4x32-10 known answers (Random123 kat_vectors) and mask properties."""

import numpy as np
import pytest

from emcoder_ref.masks import drop_threshold, keep_mask, philox4x32_10

KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,want", KAT)
def test_kat(ctr, key, want):
    got = tuple(int(w) for w in philox4x32_10(ctr, key))
    assert got == want


def test_vectorized_matches_scalar():
    blk = np.arange(5, dtype=np.uint64)
    words = philox4x32_10((blk, 3, 7, 2), (99, 0))
    for b in range(5):
        one = philox4x32_10((b, 3, 7, 2), (99, 0))
        assert [int(w[b]) for w in words] == [int(w) for w in one]


def test_keep_mask_layout_and_rate():
    seed, p = 1234, 0.1
    m = keep_mask(seed, p, np.array([[0], [1]]), 3, np.arange(5)[None, :], 10)  # (2, 5, 10)
    assert m.shape == (2, 5, 10)
    # channel c = word c % 4 of the block with counter (c // 4, pos, sample, site)
    thr = drop_threshold(p)
    words = philox4x32_10((2, 4, 1, 3), (seed, 0))
    for c in (8, 9):
        assert m[1, 4, c] == (int(words[c % 4]) >= thr)
    big = keep_mask(7, 0.1, 0, 0, np.arange(2000), 64)
    assert abs(big.mean() - 0.9) < 0.005


def test_threshold_and_p0():
    assert drop_threshold(0.1) == int(np.floor(float(np.float32(0.1)) * 2**32))
    assert keep_mask(1, 0.0, 0, 0, np.arange(3), 5).all()
    with pytest.raises(ValueError):
        drop_threshold(1.0)


def test_seed_high_word_is_key1():
    a = keep_mask(1 << 32, 0.5, 0, 0, np.arange(4), 8)
    b = keep_mask(0, 0.5, 0, 0, np.arange(4), 8)
    w = philox4x32_10((0, 0, 0, 0), (0, 1))
    assert a[0, 0] == (int(w[0]) >= drop_threshold(0.5))
    assert not np.array_equal(a, b)
