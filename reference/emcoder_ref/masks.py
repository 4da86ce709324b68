"""Counter-based dropout masks, exactly as docs/dropout-masks.md specifies.

Philox4x32-10 (Salmon et al., SC'11; Random123) vectorized in numpy with uint64
arithmetic (every u32 product fits in u64), then the keep bit of channel c at
counter (c // 4, pos, sample, site), output word c % 4.
"""

from __future__ import annotations

import numpy as np

M0 = np.uint64(0xD2511F53)
M1 = np.uint64(0xCD9E8D57)
W0 = 0x9E3779B9
W1 = 0xBB67AE85
MASK32 = np.uint64(0xFFFFFFFF)
SHIFT32 = np.uint64(32)


def philox4x32_10(ctr, key):
    """ctr: 4 arrays (broadcastable, values < 2^32), key: (k0, k1) ints.
    Returns 4 uint64 arrays holding the u32 output words."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in ctr)
    c0, c1, c2, c3 = np.broadcast_arrays(c0, c1, c2, c3)
    k0, k1 = int(key[0]) & 0xFFFFFFFF, int(key[1]) & 0xFFFFFFFF
    for rnd in range(10):
        if rnd > 0:  # key bump before rounds 2..10
            k0 = (k0 + W0) & 0xFFFFFFFF
            k1 = (k1 + W1) & 0xFFFFFFFF
        p0 = M0 * c0  # full 64-bit product of two u32 values
        p1 = M1 * c2
        hi0, lo0 = p0 >> SHIFT32, p0 & MASK32
        hi1, lo1 = p1 >> SHIFT32, p1 & MASK32
        c0, c1, c2, c3 = (hi1 ^ c1 ^ np.uint64(k0), lo1, hi0 ^ c3 ^ np.uint64(k1), lo0)
    return c0, c1, c2, c3


def drop_threshold(p: float) -> int:
    """thr = floor(p * 2^32) with p the f32 config value widened to f64."""
    p64 = float(np.float32(p))
    if not 0.0 <= p64 < 1.0:
        raise ValueError(f"dropout p must be in [0, 1), got {p}")
    return int(np.floor(p64 * 4294967296.0))


def keep_mask(seed: int, p: float, sample, site: int, pos, width: int) -> np.ndarray:
    """Keep bits of one dropout site.

    sample, pos: integer arrays (or scalars) broadcastable to a common shape S.
    Returns a bool array of shape S + (width,): True = kept (scale by 1/(1-p)),
    False = dropped (word < floor(p * 2^32)).
    """
    thr = drop_threshold(p)
    sample = np.asarray(sample, dtype=np.uint64)
    pos = np.asarray(pos, dtype=np.uint64)
    S = np.broadcast_shapes(sample.shape, pos.shape)
    if thr == 0:
        return np.ones(S + (width,), dtype=bool)
    nblk = (width + 3) // 4
    blk = np.arange(nblk, dtype=np.uint64)  # (nblk,)
    key = (seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF)
    words = philox4x32_10(
        (blk, pos[..., None], sample[..., None], np.uint64(site)), key)  # 4 x S+(nblk,)
    w = np.stack(words, axis=-1).reshape(S + (nblk * 4,))[..., :width]  # word c%4 of block c//4
    return w >= np.uint64(thr)
