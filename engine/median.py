"""Median filtering of each channel over k×k windows, forward and backward (feature squeezing's
"median smoothing", Xu, Evans & Qi, NDSS 2018).

SciPy's ``scipy.ndimage.median_filter(x, size=(1, 1, k, k), mode="reflect")`` conventions, so
the two agree value for value:

    window of output (y, x): rows y + i − ⌊k/2⌋ and columns x + j − ⌊k/2⌋ for i, j in 0..k−1
    (for an even k the window reaches one more row and column up and left than down and
    right: a 2×2 window covers (y − 1, x − 1) … (y, x));
    borders by reflection about the edge, the edge pixel repeated: index −1 reads 0, index H
    reads H − 1 (SciPy's "reflect", d c b a | a b c d | d c b a);
    y = the value of rank ⌊k²/2⌋ (0-based) of the k² window values: the median for odd k, the
    upper of the two middle values for even k (2×2: the third smallest of four).

The output equals one input pixel of its window; the backward routes the gradient to that pixel
(the first in scan order among equal values), the derivative of the median almost everywhere.
"""

import numpy as np
from numba import njit, prange

from ._args import float_array, where
from ._jit import JIT, JIT_PARALLEL


@njit(**JIT)
def _reflect(i, n):
    # SciPy's "reflect" for an offset of at most one period: −1 → 0, n → n − 1
    if i < 0:
        i = -i - 1
    if i >= n:
        i = 2 * n - i - 1
    return min(max(i, 0), n - 1)


@njit(**JIT_PARALLEL)
def median_filter_forward_nchw(x, k, y, source):
    # x, y: (N, C, H, W); source: (N, C, H, W) int64, every cell written
    # y[n, c, r, s] = rank ⌊k²/2⌋ of {x[n, c, refl(r + i − ⌊k/2⌋), refl(s + j − ⌊k/2⌋))};
    # source = the flat index iy·W + ix of the pixel it came from
    N, C, H, W = x.shape
    half = k // 2
    rank = (k * k) // 2
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        vals = np.empty(k * k, dtype=x.dtype)
        where = np.empty(k * k, dtype=np.int64)
        for r in range(H):
            for s in range(W):
                m = 0
                for i in range(k):
                    iy = _reflect(r + i - half, H)
                    for j in range(k):
                        ix = _reflect(s + j - half, W)
                        vals[m] = x[n, c, iy, ix]
                        where[m] = iy * W + ix
                        m += 1
                order = np.argsort(vals, kind="mergesort")  # stable: ties in scan order
                y[n, c, r, s] = vals[order[rank]]
                source[n, c, r, s] = where[order[rank]]


@njit(**JIT_PARALLEL)
def median_filter_backward_nchw(dy, source, dx):
    # dy, source: (N, C, H, W); dx: (N, C, H, W), accumulated into
    # dx[n, c].flat[source[n, c, r, s]] += dy[n, c, r, s]   (one plane per iteration: race-free)
    N, C, H, W = dy.shape
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for r in range(H):
            for s in range(W):
                q = source[n, c, r, s]
                dx[n, c, q // W, q % W] += dy[n, c, r, s]


def check_median_size(k, at):
    """k: an integer 1..9 (the window is k×k)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= 9:
        raise ValueError(f"{at}: the median window size must be an integer 1..9, got {k!r}")
    return int(k)


def median_filter_forward(x, k, *, name="median_filter"):
    """Median of each channel of ``x`` (N, C, H, W) over k×k windows → y (see the module)."""
    at = where(name, "MedianFilter")
    k = check_median_size(k, at)
    x = float_array(x, "input", at, ndim=4)
    y = np.empty_like(x)
    median_filter_forward_nchw(x, k, y, np.empty(x.shape, np.int64))
    return y
