"""engine/median.py and the MedianFilter layer against scipy.ndimage.median_filter.

SciPy's conventions, which the kernel follows: the window of output (r, s) covers offsets
i − ⌊k/2⌋ for i = 0..k−1 (a 2×2 window reaches up and left: (r−1, s−1) … (r, s)), borders
reflect with the edge pixel repeated, and the value taken is of rank ⌊k²/2⌋ (for 2×2 the
third smallest of four: the upper middle value).
"""

import numpy as np
import pytest
import scipy.ndimage
from helpers import assert_close, check_op

from robustcnn.engine import MedianFilter, Net, median_filter_forward
from robustcnn.engine.layers import Context


def scipy_median(x, k):
    return scipy.ndimage.median_filter(x, size=(1, 1, k, k), mode="reflect")


def reference_backward(dy, x, k):
    """Route each output's gradient to the window pixel holding its value (no ties in x)."""
    y = scipy_median(x, k)
    N, C, H, W = x.shape
    pad_lo = k // 2
    pad = np.pad(x, ((0, 0), (0, 0), (pad_lo, k - 1 - pad_lo), (pad_lo, k - 1 - pad_lo)),
                 mode="symmetric")
    rows = np.pad(np.arange(H), (pad_lo, k - 1 - pad_lo), mode="symmetric")
    cols = np.pad(np.arange(W), (pad_lo, k - 1 - pad_lo), mode="symmetric")
    dx = np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for r in range(H):
                for s in range(W):
                    win = pad[n, c, r:r + k, s:s + k]
                    i, j = np.argwhere(win == y[n, c, r, s])[0]
                    dx[n, c, rows[r + i], cols[s + j]] += dy[n, c, r, s]
    return dx


def run_layer(k):
    layer = MedianFilter("m", size=k)

    def forward(x):
        layer.setup([x.shape[1:]], x.dtype)
        return layer.forward([x], Context(keep=True))[0]

    def backward(dy, x):
        forward(x)
        return layer.backward([dy], Context(input_grad=True))[0]

    return forward, backward


@pytest.mark.parametrize("shape", [(2, 3, 7, 6), (1, 1, 4, 4), (2, 1, 2, 5)])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_median_filter_matches_scipy(k, shape, dtype, rng):
    x = rng.standard_normal(shape)
    forward, backward = run_layer(k)
    check_op(forward, lambda x: scipy_median(x, k), [x], backward=backward,
             ref_backward=lambda dy, x: reference_backward(dy, x, k), dtype=dtype, rtol=0,
             grad_rtol=1e-6 if dtype == np.float32 else 1e-12, what=f"median {k}x{k}")


def test_two_by_two_anchoring_by_hand():
    x = np.array([[[[1.0, 2.0, 3.0],
                    [4.0, 5.0, 6.0],
                    [7.0, 8.0, 9.0]]]])
    # output (1, 1) takes rows 0–1 and columns 0–1: {1, 2, 4, 5}, rank 2 → 4
    # output (0, 0) reflects: rows {0, 0}, columns {0, 0} → {1, 1, 1, 1} → 1
    y = median_filter_forward(x, 2)
    assert y[0, 0, 1, 1] == 4.0 and y[0, 0, 0, 0] == 1.0
    assert_close(y, scipy_median(x, 2), 0, "2x2 by hand")


def test_binary_images_and_ties():
    x = (np.random.default_rng(0).random((2, 1, 9, 9)) > 0.5).astype(np.float32)
    for k in (2, 3):
        assert_close(median_filter_forward(x, k), scipy_median(x, k), 0, f"binary {k}")


def test_in_a_net_and_its_spec():
    net = Net([MedianFilter("m", size=3)], (1, 5, 5), dtype=np.float64)
    x = np.random.default_rng(1).random((2, 1, 5, 5))
    assert_close(net.forward(x), scipy_median(x, 3), 0, "net")
    again = Net.from_spec(net.spec())
    assert again.layer("m").size == 3


@pytest.mark.parametrize("size", [0, 10, 2.5, True])
def test_bad_size(size):
    with pytest.raises(ValueError, match=r"m \(MedianFilter\): the median window size"):
        MedianFilter("m", size=size)
