"""Data augmentation for NCHW image batches, drawn from a seeded generator.

``RandomShiftFlip`` is the standard recipe for small images: translate by up to ``pad`` pixels
(zero fill, as padding then cropping) and mirror left-right with probability ½.
"""

import numpy as np
from numba import njit, prange

from ._jit import JIT_PARALLEL


@njit(**JIT_PARALLEL)
def shift_flip_nchw(x, dy, dx, flip, out):
    # x, out: (N, C, H, W); dy, dx: (N,) shifts; flip: (N,) bool
    # out[n, c, i, j] = x[n, c, i − dy[n], j' − dx[n]] (0 outside), j' = W − 1 − j if flip[n] else j
    N, C, H, W = x.shape
    for n in prange(N):
        for c in range(C):
            for i in range(H):
                si = i - dy[n]
                for j in range(W):
                    sj = (W - 1 - j if flip[n] else j) - dx[n]
                    inside = 0 <= si < H and 0 <= sj < W
                    out[n, c, i, j] = x[n, c, si, sj] if inside else 0.0


class RandomShiftFlip:
    """Random translation by up to ``pad`` pixels each way and optional horizontal mirroring."""

    def __init__(self, pad=2, flip=True):
        self.pad = int(pad)
        self.flip = bool(flip)
        if self.pad < 0:
            raise ValueError(f"RandomShiftFlip: pad must be >= 0, got {pad}")

    def __call__(self, x, rng):
        n = x.shape[0]
        dy = rng.integers(-self.pad, self.pad + 1, size=n)
        dx = rng.integers(-self.pad, self.pad + 1, size=n)
        flip = rng.random(n) < 0.5 if self.flip else np.zeros(n, dtype=bool)
        out = np.empty_like(x)
        shift_flip_nchw(np.ascontiguousarray(x), dy, dx, flip, out)
        return out

    def __repr__(self):
        return f"RandomShiftFlip(pad={self.pad}, flip={self.flip})"
