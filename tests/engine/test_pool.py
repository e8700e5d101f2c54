"""engine/pool.py: max and average pooling with Caffe's semantics (output size, divisor, first
maximum on ties), global average pooling; loop references, finite differences and torch."""

import math

import numpy as np
import pytest
from helpers import F32, F64, assert_close, check_op, distinct_values
from hypothesis import event, given, settings
from hypothesis import strategies as st

from robustcnn.engine import (avg_pool2d_backward, avg_pool2d_forward, global_avg_pool2d_backward,
                              global_avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward,
                              pool_output_size)
from robustcnn.engine.pool import max_pool2d_nchw, max_pool2d_values, max_pool_plane_2x2

# ---------------------------------------------------------------------------------------------
# References (float64, one window at a time)


def caffe_pooled(size, kernel, stride, pad, ceil_mode, padded=None):
    """Caffe's PoolingLayer::Reshape, written out by hand:

        pooled = ceil((size + 2·pad − kernel) / stride) + 1      (floor in floor mode)
        if (pad_h || pad_w) and (pooled − 1)·stride >= size + pad: pooled −= 1

    ``padded`` is ``pad_h || pad_w`` (default: this axis' pad).
    """
    span = size + 2 * pad - kernel
    pooled = (math.ceil(span / stride) if ceil_mode else math.floor(span / stride)) + 1
    if (pad > 0 if padded is None else padded) and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


def _geometry(x, kernel, stride, padding, ceil_mode):
    two = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    (kh, kw), (ph, pw) = two(kernel), two(padding)
    sh, sw = two(kernel if stride is None else stride)
    H, W = x.shape[2:]
    padded = ph > 0 or pw > 0
    return (kh, kw, sh, sw, ph, pw, caffe_pooled(H, kh, sh, ph, ceil_mode, padded),
            caffe_pooled(W, kw, sw, pw, ceil_mode, padded))


def _windows(x, kernel, stride, padding, ceil_mode):
    """Yield (oy, ox, rows, cols, divisor): the window clipped to the input, and Caffe's AVE
    divisor (the window clipped to the padded input: padding counts, ceil overflow does not)."""
    kh, kw, sh, sw, ph, pw, oh, ow = _geometry(x, kernel, stride, padding, ceil_mode)
    H, W = x.shape[2:]
    for oy in range(oh):
        hs = oy * sh - ph
        he = min(hs + kh, H + ph)
        for ox in range(ow):
            ws = ox * sw - pw
            we = min(ws + kw, W + pw)
            yield (oy, ox, slice(max(hs, 0), min(he, H)), slice(max(ws, 0), min(we, W)),
                   (he - hs) * (we - ws))


def _out(x, kernel, stride, padding, ceil_mode):
    *_, oh, ow = _geometry(x, kernel, stride, padding, ceil_mode)
    return np.zeros(x.shape[:2] + (oh, ow))


def max_pool_ref(x, kernel, stride=None, padding=0, ceil_mode=True):
    y = _out(x, kernel, stride, padding, ceil_mode)
    for oy, ox, rows, cols, _ in _windows(x, kernel, stride, padding, ceil_mode):
        y[:, :, oy, ox] = x[:, :, rows, cols].max(axis=(2, 3))
    return y


def max_pool_ref_backward(dy, x, kernel, stride=None, padding=0, ceil_mode=True):
    """dy goes to the window's first maximum in row-major scan order (np.argmax's choice)."""
    dx = np.zeros_like(x)
    N, C = x.shape[:2]
    n, c = np.meshgrid(np.arange(N), np.arange(C), indexing="ij")
    for oy, ox, rows, cols, _ in _windows(x, kernel, stride, padding, ceil_mode):
        win = x[:, :, rows, cols]
        first = win.reshape(N, C, -1).argmax(axis=2)
        width = win.shape[3]
        np.add.at(dx, (n, c, rows.start + first // width, cols.start + first % width),
                  dy[:, :, oy, ox])
    return dx


def avg_pool_ref(x, kernel, stride=None, padding=0, ceil_mode=True):
    y = _out(x, kernel, stride, padding, ceil_mode)
    for oy, ox, rows, cols, divisor in _windows(x, kernel, stride, padding, ceil_mode):
        y[:, :, oy, ox] = x[:, :, rows, cols].sum(axis=(2, 3)) / divisor
    return y


def avg_pool_ref_backward(dy, x, kernel, stride=None, padding=0, ceil_mode=True):
    dx = np.zeros_like(x)
    for oy, ox, rows, cols, divisor in _windows(x, kernel, stride, padding, ceil_mode):
        dx[:, :, rows, cols] += (dy[:, :, oy, ox] / divisor)[:, :, None, None]
    return dx


POOLS = {
    "max": (max_pool2d_forward, max_pool2d_backward, max_pool_ref, max_pool_ref_backward),
    "avg": (avg_pool2d_forward, avg_pool2d_backward, avg_pool_ref, avg_pool_ref_backward),
}


def run_pool(kind, x, dtype, **geom):
    fwd, bwd, ref, ref_bwd = POOLS[kind]
    return check_op(lambda x: fwd(x, **geom), lambda x: ref(x, **geom), [x],
                    backward=lambda dy, x: bwd(dy, x, **geom),
                    ref_backward=lambda dy, x: ref_bwd(dy, x, **geom),
                    dtype=dtype, what=f"{kind}_pool2d")


# ---------------------------------------------------------------------------------------------
# Output size

# (H, kernel, stride, pad, ceil-mode size, floor-mode size); None: refused (see below).
SIZE_TABLE = [
    (6, 3, 2, 0, 3, 2),    # ceil(3/2)+1 = 3 vs floor: 2
    (7, 3, 2, 1, 4, 4),    # ceil(6/2)+1 = 4; (4−1)·2 = 6 < 7+1, stays 4
    (6, 3, 2, 1, 4, 3),    # ceil(5/2)+1 = 4; 6 < 6+1, stays 4
    (5, 2, 2, 1, 3, 3),    # ceil(5/2)+1 = 4; (4−1)·2 = 6 >= 5+1: the padding rule removes one
    (7, 3, 3, 2, 3, 3),    # ceil(8/3)+1 = 4; 9 >= 7+2: removed again
    (2, 3, 2, 2, 2, 2),    # ceil(3/2)+1 = 3; 4 >= 2+2: removed
    (8, 3, 3, 2, 4, 4),    # ceil(9/3)+1 = 4; 9 < 10
    (10, 4, 3, 1, 4, 3),   # ceil(8/3)+1 = 4 vs floor: 3
    (14, 3, 2, 0, 7, 6),   # GoogLeNet-style ceil pooling
    (55, 3, 2, 0, 27, 27),  # AlexNet pool1
    (28, 2, 2, 0, 14, 14),  # LeNet
    (5, 5, 1, 0, 1, 1),    # kernel as large as the input
    (1, 1, 1, 0, 1, 1),
    (4, 3, 1, 2, 6, 6),    # padding 2 < kernel 3: windows poke two rows out
    (4, 1, 2, 0, None, 2),  # kernel < stride: ceil mode's last window starts at row 4 (outside)
]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("row", SIZE_TABLE, ids=lambda r: "H{}k{}s{}p{}".format(*r[:4]))
def test_output_size_follows_caffe(row, kind, rng):
    H, k, s, p, ceil_size, floor_size = row
    for ceil_mode, want in ((True, ceil_size), (False, floor_size)):
        x = rng.standard_normal((1, 2, H, H))
        fwd = POOLS[kind][0]
        if want is None:
            with pytest.raises(ValueError, match="starts outside the 4x4 input; use floor mode"):
                fwd(x, k, s, p, ceil_mode)
            continue
        assert caffe_pooled(H, k, s, p, ceil_mode) == want  # the table agrees with the formula
        assert pool_output_size(H, k, s, p, ceil_mode) == want
        assert fwd(x, k, s, p, ceil_mode).shape == (1, 2, want, want)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_padding_on_one_axis_applies_the_rule_to_both(kind, rng):
    # Caffe checks `if (pad_h_ || pad_w_)`: with pad_h = 1, the unpadded w axis (W = 4, kernel 1,
    # stride 2: ceil(3/2) + 1 = 3 windows, the last starting at column 4) also loses its last
    # window → 2. (Without any padding Caffe would keep it; robustcnn refuses that case.)
    x = rng.standard_normal((1, 2, 4, 4))
    geom = dict(kernel=(3, 1), stride=(1, 2), padding=(1, 0))
    assert caffe_pooled(4, 1, 2, 0, True, padded=True) == 2
    y, _, _ = run_pool(kind, x, F64, **geom)
    assert y.shape == (1, 2, 4, 2)
    geom_t = dict(kernel=(1, 3), stride=(2, 1), padding=(0, 1))
    y, _, _ = run_pool(kind, x, F64, **geom_t)
    assert y.shape == (1, 2, 2, 4)
    with pytest.raises(ValueError, match="use floor mode"):
        POOLS[kind][0](x, kernel=(3, 1), stride=(1, 2), padding=0)


# ---------------------------------------------------------------------------------------------
# Forward and backward against the references

# (id, N, C, H, W, geometry)
CASES = [
    ("k2s2", 2, 3, 8, 8, dict(kernel=2)),
    # Odd sizes: floor mode drops the last row and column (every window inside: the written-out
    # 2×2 path); ceil mode adds clipped windows (the general loop).
    ("k2s2_odd_floor", 2, 3, 7, 9, dict(kernel=2, ceil_mode=False)),
    ("k2s2_odd_ceil", 2, 3, 7, 9, dict(kernel=2)),
    ("k3s2_ceil", 2, 3, 7, 8, dict(kernel=3, stride=2)),
    ("k3s2_floor", 2, 3, 7, 8, dict(kernel=3, stride=2, ceil_mode=False)),
    ("k3s2p1_ceil", 2, 2, 6, 9, dict(kernel=3, stride=2, padding=1)),
    ("k3s2p1_floor", 2, 2, 6, 9, dict(kernel=3, stride=2, padding=1, ceil_mode=False)),
    ("k2s2p1_rule_fires", 1, 2, 5, 5, dict(kernel=2, stride=2, padding=1)),
    ("k3s1p1", 2, 2, 5, 6, dict(kernel=3, stride=1, padding=1)),
    ("k3s3p2", 1, 3, 7, 8, dict(kernel=3, stride=3, padding=2)),
    ("stride_lt_kernel_overlap", 2, 2, 9, 7, dict(kernel=4, stride=1)),
    ("stride_gt_kernel_floor", 2, 2, 9, 10, dict(kernel=2, stride=3, ceil_mode=False)),
    ("stride_gt_kernel_ceil_padded", 2, 2, 9, 10, dict(kernel=2, stride=3, padding=1)),
    ("rect", 2, 2, 9, 10, dict(kernel=(3, 2), stride=(2, 1), padding=(1, 0))),
    ("rect_floor", 2, 2, 9, 11, dict(kernel=(2, 4), stride=(3, 2), padding=(1, 2),
                                     ceil_mode=False)),
    ("kernel_is_input", 2, 3, 5, 4, dict(kernel=(5, 4))),
    # Caffe's ceil mode keeps one window over the whole plane: ceil(−1/7) + 1 = 1.
    ("kernel_exceeds_input_ceil", 2, 2, 5, 6, dict(kernel=7)),
    ("batch1_single_channel", 1, 1, 6, 6, dict(kernel=3, stride=2)),
]


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_pool_matches_reference(case, kind, dtype, rng):
    _, N, C, H, W, geom = case
    # Distinct, well separated values: no ties, so max pooling is differentiable everywhere
    # finite differences look (ties are tested on their own below).
    x = distinct_values(rng, (N, C, H, W), spacing=0.01)
    run_pool(kind, x, dtype, **geom)


def random_pool_case(draw):
    """Random sizes and geometry: Caffe's size (or a refusal), then values and gradients."""
    kh, kw = draw(st.integers(1, 4), label="kh"), draw(st.integers(1, 4), label="kw")
    sh, sw = draw(st.integers(1, 4), label="sh"), draw(st.integers(1, 4), label="sw")
    ph, pw = draw(st.integers(0, kh - 1), label="ph"), draw(st.integers(0, kw - 1), label="pw")
    H = draw(st.integers(max(1, kh - 2 * ph), 9), label="H")
    W = draw(st.integers(max(1, kw - 2 * pw), 9), label="W")
    ceil_mode = draw(st.booleans(), label="ceil_mode")
    kind = draw(st.sampled_from(["max", "avg"]), label="kind")
    geom = dict(kernel=(kh, kw), stride=(sh, sw), padding=(ph, pw), ceil_mode=ceil_mode)
    x = distinct_values(np.random.default_rng(H * 10 + W), (2, 2, H, W), spacing=0.01)
    oh = caffe_pooled(H, kh, sh, ph, ceil_mode, padded=ph > 0 or pw > 0)
    ow = caffe_pooled(W, kw, sw, pw, ceil_mode, padded=ph > 0 or pw > 0)
    if (oh - 1) * sh - ph >= H or (ow - 1) * sw - pw >= W:
        # A last window that starts outside the input (Caffe keeps it when unpadded; it pools
        # nothing) is refused.
        with pytest.raises(ValueError, match="use floor mode"):
            POOLS[kind][0](x, **geom)
        event("refused")
        return
    y, _, _ = run_pool(kind, x, F64, **geom)
    assert y.shape == (2, 2, oh, ow)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(data=st.data())
def test_pool_random_geometry(data):
    random_pool_case(data.draw)


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_pool_random_geometry_thorough(data):
    # Not derandomised: each slow run explores new cases (failures are kept in .hypothesis/).
    random_pool_case(data.draw)


def test_avg_divisor_counts_padding_but_not_ceil_overflow():
    # H = W = 6, kernel 3, stride 2, pad 1, ceil mode → 4 windows per axis, rows [−1, 2),
    # [1, 4), [3, 6), [5, 8). The first holds one padding row (counts: 2 ones / 3); the last
    # reaches past the padded input (6 + 1 = 7), so only [5, 7) counts: 1 one / 2.
    per_axis = np.array([2 / 3, 1, 1, 1 / 2])
    x = np.ones((1, 1, 6, 6))
    y = avg_pool2d_forward(x, 3, 2, 1, ceil_mode=True)
    assert_close(y[0, 0], np.outer(per_axis, per_axis), 1e-15, "AVE divisor")
    # Floor mode drops the overflowing window; the padded first one stays 2/3.
    y = avg_pool2d_forward(x, 3, 2, 1, ceil_mode=False)
    assert_close(y[0, 0], np.outer(per_axis[:3], per_axis[:3]), 1e-15, "AVE divisor, floor")


def test_max_pool_padding_never_wins():
    # All values negative: a zero from the padding must not be the maximum (Caffe skips it).
    # x[r, c] = −1 − (4r + c) decreases along rows and columns, so each window's maximum is
    # its first cell inside the input: rows and columns 0, 1, 3 for windows starting at −1, 1, 3.
    x = -1.0 - np.arange(16.0).reshape(1, 1, 4, 4)
    y = max_pool2d_forward(x, 3, 2, 1)
    want = -1.0 - (4 * np.array([0, 1, 3])[:, None] + np.array([0, 1, 3])[None, :])
    assert_close(y[0, 0], want, 1e-15, "padded max pool")


# ---------------------------------------------------------------------------------------------
# Ties: the gradient goes to the first maximum in scan order (Caffe's mask, torch's argmax)


def test_max_pool_ties_route_to_first_maximum():
    x = np.ones((1, 1, 4, 4))
    dx = max_pool2d_backward(np.ones((1, 1, 2, 2)), x, 2)
    want = np.zeros((4, 4))
    want[::2, ::2] = 1.0  # the top-left cell of every window
    assert_close(dx[0, 0], want, 0.0, "ties, non-overlapping windows")


def test_max_pool_ties_inside_window_and_overlapping():
    x = np.array([[0.0, 5.0, 1.0],
                  [5.0, 2.0, 5.0],
                  [1.0, 5.0, 0.0]]).reshape(1, 1, 3, 3)
    # Four overlapping 2×2 windows (stride 1), each holding two 5s: the first in row-major
    # order wins: (0, 1), (0, 1), (1, 0), (1, 2).
    dy = np.array([[1.0, 10.0], [100.0, 1000.0]]).reshape(1, 1, 2, 2)
    dx = max_pool2d_backward(dy, x, 2, 1)
    want = np.zeros((3, 3))
    want[0, 1] = 11.0
    want[1, 0] = 100.0
    want[1, 2] = 1000.0
    assert_close(dx[0, 0], want, 0.0, "ties, overlapping windows")
    assert_close(dx, max_pool_ref_backward(dy, x, 2, 1), 0.0, "reference on ties")


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(6, 8), (7, 9), (2, 2)])
def test_max_pool_plane_2x2_matches_numpy(shape, dtype, rng):
    # The written-out 2×2 kernel against NumPy: the max of each window and the flat index of
    # its first maximum in scan order, on few distinct values (many ties).
    plane = rng.integers(0, 3, size=shape).astype(dtype)
    oh, ow = shape[0] // 2, shape[1] // 2
    y, argmax = np.empty((oh, ow), dtype=dtype), np.empty((oh, ow), dtype=np.int64)
    max_pool_plane_2x2(plane, y, argmax)
    windows = plane[:2 * oh, :2 * ow].reshape(oh, 2, ow, 2).transpose(0, 2, 1, 3).reshape(oh, ow, 4)
    first = windows.argmax(axis=2)  # NumPy's argmax is the first maximum
    rows = 2 * np.arange(oh)[:, None] + first // 2
    cols = 2 * np.arange(ow)[None, :] + first % 2
    np.testing.assert_array_equal(y, windows.max(axis=2))
    np.testing.assert_array_equal(argmax, rows * shape[1] + cols)


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("args", [(2, 2, 2, 2, 0, 0), (3, 3, 2, 2, 1, 1), (3, 2, 1, 2, 0, 1),
                                  (2, 2, 2, 2, 1, 0)], ids=["2x2", "3x3s2p1", "3x2", "2x2p"])
def test_max_pool_values_are_the_argmax_passes_values(args, dtype, rng):
    # The pass without argmax (eval, nothing kept for a backward) takes the same floats as the
    # pass that records the argmax: ties, signed zeros and odd sizes (the last row and column
    # outside every 2×2 window) included.
    x = rng.choice(np.array([-0.0, 0.0, 1.0, 2.0]), size=(3, 4, 9, 7)).astype(dtype)
    kh, kw, sh, sw, ph, pw = args
    oh = pool_output_size(9, kh, sh, ph, padded=(ph, pw) != (0, 0))
    ow = pool_output_size(7, kw, sw, pw, padded=(ph, pw) != (0, 0))
    y, argmax = np.empty((3, 4, oh, ow), dtype=dtype), np.empty((3, 4, oh, ow), dtype=np.int64)
    max_pool2d_nchw(x, *args, y, argmax)
    values = np.full_like(y, np.nan)
    max_pool2d_values(x, *args, values)
    np.testing.assert_array_equal(values, y)
    np.testing.assert_array_equal(np.signbit(values), np.signbit(y))


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
def test_max_pool_ties_random(dtype, rng):
    # Few distinct values: many ties, many overlapping windows, padding, ceil mode.
    x = rng.integers(0, 3, size=(2, 3, 9, 8)).astype(np.float64)
    geom = dict(kernel=3, stride=2, padding=1)
    check_op(lambda x: max_pool2d_forward(x, **geom), lambda x: max_pool_ref(x, **geom), [x],
             backward=lambda dy, x: max_pool2d_backward(dy, x, **geom),
             ref_backward=lambda dy, x: max_pool_ref_backward(dy, x, **geom),
             dtype=dtype, fd=False, what="max pool with ties")  # no derivative at ties


# ---------------------------------------------------------------------------------------------
# Global average pooling


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 1, 1), (3, 4, 1, 6)])
def test_global_avg_pool(shape, dtype, rng):
    def ref(x):
        return x.sum(axis=(2, 3), keepdims=True) / (x.shape[2] * x.shape[3])

    def ref_backward(dy, x):
        return np.repeat(np.repeat(dy, x.shape[2], axis=2), x.shape[3], axis=3) / (
            x.shape[2] * x.shape[3])

    check_op(global_avg_pool2d_forward, ref, [rng.standard_normal(shape)],
             backward=global_avg_pool2d_backward, ref_backward=ref_backward, dtype=dtype,
             what="global_avg_pool2d")


def test_global_avg_pool_equals_avg_pool_over_the_plane(rng):
    x = rng.standard_normal((2, 3, 5, 6))
    assert_close(global_avg_pool2d_forward(x), avg_pool2d_forward(x, (5, 6)), 1e-12,
                 "global vs full-window average")


# ---------------------------------------------------------------------------------------------
# torch as a cross-check where its semantics coincide with Caffe's (padding ≤ kernel / 2,
# count_include_pad=True; no unpadded kernel < stride ceil windows)

TORCH_CASES = [
    ("k3s2_ceil", 2, 4, 13, 13, dict(kernel=3, stride=2, ceil_mode=True)),
    ("k3s2p1_ceil", 2, 4, 6, 9, dict(kernel=3, stride=2, padding=1, ceil_mode=True)),
    ("k3s2p1_floor", 2, 4, 6, 9, dict(kernel=3, stride=2, padding=1, ceil_mode=False)),
    ("k2s2p1_rule_fires", 2, 3, 5, 7, dict(kernel=2, stride=2, padding=1, ceil_mode=True)),
    ("rect", 2, 3, 10, 9, dict(kernel=(3, 4), stride=(2, 3), padding=(1, 2), ceil_mode=True)),
    ("k3s1p1", 1, 2, 7, 7, dict(kernel=3, stride=1, padding=1, ceil_mode=False)),
    ("pad_h_only_kernel_lt_stride", 2, 2, 4, 4, dict(kernel=(3, 1), stride=(1, 2), padding=(1, 0),
                                                     ceil_mode=True)),
]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_pool_matches_torch(case, kind, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    _, N, C, H, W, geom = case
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    targs = dict(kernel_size=geom["kernel"], stride=geom["stride"],
                 padding=geom.get("padding", 0), ceil_mode=geom["ceil_mode"])
    if kind == "max":
        ty = F.max_pool2d(tx, **targs)
    else:
        ty = F.avg_pool2d(tx, count_include_pad=True, **targs)
    dy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    (ty * torch.tensor(dy)).sum().backward()
    fwd, bwd = POOLS[kind][:2]
    assert_close(fwd(x, **geom), ty.detach().numpy(), 1e-6, f"{kind} pool vs torch")
    assert_close(bwd(dy, x, **geom), tx.grad.numpy(), 1e-6, f"{kind} pool gradient vs torch")


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("fwd", [max_pool2d_forward, avg_pool2d_forward])
def test_bad_arguments(fwd, rng):
    x = rng.standard_normal((1, 2, 6, 6))
    with pytest.raises(ValueError, match=r"pool1 \(Pooling\): padding \(3, 3\) must be smaller "
                                         r"than the kernel \(3, 3\)"):
        fwd(x, 3, 1, 3, name="pool1")
    with pytest.raises(ValueError, match="does not fit the input 6x6"):
        fwd(x, 7, ceil_mode=False)  # (ceil mode: one window over the whole plane, as Caffe)
    with pytest.raises(ValueError, match="does not fit the input 6x6"):
        fwd(x, 8, 1)
    with pytest.raises(ValueError, match="input must have 4 axes"):
        fwd(x[0], 2)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        fwd(x, 2, 0)
    with pytest.raises(ValueError, match="kernel must be >= 1"):
        fwd(x, 0)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        fwd(x, 2, 2, -1)
    with pytest.raises(TypeError, match="input must be float32 or float64"):
        fwd(x.astype(np.int16), 2)
    x[0, 1, 2, 3] = np.inf
    with pytest.raises(ValueError, match="input has 1 non-finite"):
        fwd(x, 2)


@pytest.mark.parametrize("bwd", [max_pool2d_backward, avg_pool2d_backward])
def test_bad_output_gradient(bwd, rng):
    x = rng.standard_normal((1, 2, 6, 6))
    with pytest.raises(ValueError, match=r"output gradient shape \(1, 2, 3, 2\) does not match "
                                         r"the output \(1, 2, 3, 3\)"):
        bwd(np.zeros((1, 2, 3, 2)), x, 2)
    with pytest.raises(TypeError, match="output gradient is float32"):
        bwd(np.zeros((1, 2, 3, 3), np.float32), x, 2)


def test_global_avg_pool_bad_input(rng):
    with pytest.raises(ValueError, match="input must have 4 axes"):
        global_avg_pool2d_forward(rng.standard_normal((2, 3)))
    with pytest.raises(ValueError, match=r"output gradient must have 4 axes, got shape \(2, 3\)"):
        global_avg_pool2d_backward(np.zeros((2, 3)), rng.standard_normal((2, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"output gradient shape \(2, 3, 4, 4\) does not match "
                                         r"the output \(2, 3, 1, 1\)"):
        global_avg_pool2d_backward(np.zeros((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4)))


# ---------------------------------------------------------------------------------------------
# Average pooling that leaves the padding out of the mean (count_pad=False, Keras' 'same')


def avg_inside_ref(x, kernel, stride=None, padding=0, ceil_mode=True):
    y = _out(x, kernel, stride, padding, ceil_mode)
    for oy, ox, rows, cols, _ in _windows(x, kernel, stride, padding, ceil_mode):
        y[:, :, oy, ox] = x[:, :, rows, cols].mean(axis=(2, 3))
    return y


def avg_inside_ref_backward(dy, x, kernel, stride=None, padding=0, ceil_mode=True):
    dx = np.zeros_like(x)
    for oy, ox, rows, cols, _ in _windows(x, kernel, stride, padding, ceil_mode):
        cells = (rows.stop - rows.start) * (cols.stop - cols.start)
        dx[:, :, rows, cols] += (dy[:, :, oy, ox] / cells)[:, :, None, None]
    return dx


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_avg_pool_without_padding_in_the_mean(case, dtype, rng):
    _, N, C, H, W, geom = case
    x = rng.standard_normal((N, C, H, W))
    check_op(lambda x: avg_pool2d_forward(x, count_pad=False, **geom),
             lambda x: avg_inside_ref(x, **geom), [x],
             backward=lambda dy, x: avg_pool2d_backward(dy, x, count_pad=False, **geom),
             ref_backward=lambda dy, x: avg_inside_ref_backward(dy, x, **geom), dtype=dtype,
             what=f"avg_pool2d count_pad=False {case[0]}")


@pytest.mark.parametrize("geom", [dict(kernel=3, stride=1, padding=1),
                                  dict(kernel=3, stride=2, padding=1),
                                  dict(kernel=(3, 2), stride=(2, 1), padding=(1, 1))])
def test_avg_pool_without_padding_matches_torch(geom, rng):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    x = rng.standard_normal((2, 3, 7, 8))
    ours = avg_pool2d_forward(x, ceil_mode=False, count_pad=False, **geom)
    theirs = F.avg_pool2d(torch.from_numpy(x), geom["kernel"], geom["stride"], geom["padding"],
                          ceil_mode=False, count_include_pad=False).numpy()
    assert_close(ours, theirs, 1e-12, f"count_pad=False vs torch {geom}")
