"""Elementwise activations, forward and backward: ReLU (with Caffe's negative_slope) and ReLU6.

Kernels run over flat views; the Net keeps only the output for the backward, because the sign
pattern it needs is the same in y as in x (y > 0 ⇔ x > 0 for negative_slope ≥ 0).
"""

import numpy as np
from numba import njit, prange

from ._args import float_array, where
from ._jit import JIT_PARALLEL


@njit(**JIT_PARALLEL)
def relu_forward_flat(x, negative_slope, y):
    # x, y: (M,);  y = x if x > 0 else negative_slope · x
    for i in prange(x.shape[0]):
        v = x[i]
        y[i] = v if v > 0 else negative_slope * v


@njit(**JIT_PARALLEL)
def relu_backward_flat(dy, ref, negative_slope, dx):
    # dy, ref, dx: (M,); ref is x or y (same sign);  dx = dy if ref > 0 else negative_slope · dy
    for i in prange(dy.shape[0]):
        dx[i] = dy[i] if ref[i] > 0 else negative_slope * dy[i]


@njit(**JIT_PARALLEL)
def relu6_forward_flat(x, y):
    # y = min(max(x, 0), 6)
    for i in prange(x.shape[0]):
        y[i] = min(max(x[i], 0.0), 6.0)


@njit(**JIT_PARALLEL)
def relu6_backward_flat(dy, ref, dx):
    # dx = dy where 0 < x < 6, else 0 (ref is x or y: the same cells pass)
    for i in prange(dy.shape[0]):
        dx[i] = dy[i] if 0.0 < ref[i] < 6.0 else 0.0


def _check_slope(negative_slope, at):
    slope = float(negative_slope)
    if not np.isfinite(slope) or slope < 0:
        raise ValueError(f"{at}: negative_slope must be finite and >= 0, got {negative_slope!r}")
    return slope


def _pair_check(dy, x, at):
    x = float_array(x, "input", at)
    dy = float_array(dy, "output gradient", at, dtype=x.dtype)
    if dy.shape != x.shape:
        raise ValueError(f"{at}: output gradient shape {dy.shape} does not match the input {x.shape}")
    return dy, x


def relu_forward(x, negative_slope=0.0, *, name="relu"):
    """max(x, 0) + negative_slope · min(x, 0), any shape."""
    at = where(name, "ReLU")
    x = float_array(x, "input", at)
    y = np.empty_like(x)
    relu_forward_flat(x.reshape(-1), _check_slope(negative_slope, at), y.reshape(-1))
    return y


def relu_backward(dy, x, negative_slope=0.0, *, name="relu"):
    """Gradient of ``relu_forward`` w.r.t. x (at x = 0 the slope is negative_slope, as in Caffe)."""
    at = where(name, "ReLU")
    dy, x = _pair_check(dy, x, at)
    dx = np.empty_like(x)
    relu_backward_flat(dy.reshape(-1), x.reshape(-1), _check_slope(negative_slope, at), dx.reshape(-1))
    return dx


def relu6_forward(x, *, name="relu6"):
    """min(max(x, 0), 6), any shape (MobileNet's activation)."""
    x = float_array(x, "input", where(name, "ReLU6"))
    y = np.empty_like(x)
    relu6_forward_flat(x.reshape(-1), y.reshape(-1))
    return y


def relu6_backward(dy, x, *, name="relu6"):
    """Gradient of ``relu6_forward`` w.r.t. x (zero at the kinks 0 and 6)."""
    dy, x = _pair_check(dy, x, where(name, "ReLU6"))
    dx = np.empty_like(x)
    relu6_backward_flat(dy.reshape(-1), x.reshape(-1), dx.reshape(-1))
    return dx
