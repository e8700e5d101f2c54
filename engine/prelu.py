"""PReLU, the parametric ReLU with a learned slope per channel (He et al. 2015, "Delving Deep
into Rectifiers"; Caffe's PReLU layer), forward and backward:

    y[n, c, p] = x[n, c, p]              if x[n, c, p] > 0
               = a[c] · x[n, c, p]       otherwise
    dx = dy where x > 0, a[c] · dy elsewhere;   da[c] = Σ_{n, p: x ≤ 0} dy[n,c,p] · x[n,c,p]

A channel-shared PReLU (Caffe's ``channel_shared``) has one slope: ``a`` of shape (1,), and its
gradient is the sum over every channel. Inputs are (N, C) or (N, C, H, W); at x = 0 the slope
side is taken, as in Caffe.
"""

import numpy as np
from numba import njit, prange

from ._args import float_array, where
from ._jit import JIT_PARALLEL


@njit(**JIT_PARALLEL)
def prelu_forward_ncp(x, slope, y):
    # x, y: (N, C, P); slope: (C,) or (1,) (shared);  y = x if x > 0 else slope[c] · x
    N, C, P = x.shape
    shared = slope.shape[0] == 1
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        a = slope[0] if shared else slope[c]
        for p in range(P):
            v = x[n, c, p]
            y[n, c, p] = v if v > 0 else a * v


@njit(**JIT_PARALLEL)
def prelu_backward_ncp(dy, x, slope, need_input, dx, dslope_c):
    # dy, x, dx: (N, C, P); slope: (C,) or (1,); dslope_c: (C,), accumulated into (caller zeroes)
    # dx = dy if x > 0 else slope[c] · dy;   dslope_c[c] += Σ_{n, p: x ≤ 0} dy · x
    # One channel per iteration: each writes only its own dx[:, c] and dslope_c[c].
    N, C, P = x.shape
    shared = slope.shape[0] == 1
    for c in prange(C):
        a = slope[0] if shared else slope[c]
        acc = 0.0
        for n in range(N):
            for p in range(P):
                v = x[n, c, p]
                if v > 0:
                    if need_input:
                        dx[n, c, p] = dy[n, c, p]
                else:
                    if need_input:
                        dx[n, c, p] = a * dy[n, c, p]
                    acc += dy[n, c, p] * v
        dslope_c[c] += acc


def prelu_shape(x_shape):
    """The (N, C, P) view of an (N, C, …) input."""
    return (x_shape[0], x_shape[1], int(np.prod(x_shape[2:])))  # (not -1: N may be 0)


def _check(x, slope, at):
    x = float_array(x, "input", at)
    if x.ndim not in (2, 4):
        raise ValueError(f"{at}: input must be (N, C) or (N, C, H, W), got shape {x.shape}")
    slope = float_array(slope, "slope", at, ndim=1, dtype=x.dtype)
    if slope.shape[0] not in (1, x.shape[1]):
        raise ValueError(f"{at}: slope shape {slope.shape} must be (1,) or the {x.shape[1]} "
                         f"channels")
    return x, slope


def prelu_forward(x, slope, *, name="prelu"):
    """PReLU of ``x`` (N, C) or (N, C, H, W) with ``slope`` (C,) or (1,) → y, same shape."""
    x, slope = _check(x, slope, where(name, "PReLU"))
    y = np.empty_like(x)
    prelu_forward_ncp(x.reshape(prelu_shape(x.shape)), slope, y.reshape(prelu_shape(x.shape)))
    return y


def prelu_backward(dy, x, slope, *, name="prelu"):
    """Gradients of ``prelu_forward`` → (dx, dslope); dslope has the shape of ``slope``."""
    at = where(name, "PReLU")
    x, slope = _check(x, slope, at)
    dy = float_array(dy, "output gradient", at, dtype=x.dtype)
    if dy.shape != x.shape:
        raise ValueError(f"{at}: output gradient shape {dy.shape} does not match the input "
                         f"{x.shape}")
    dx = np.empty_like(x)
    dslope_c = np.zeros(x.shape[1], dtype=x.dtype)
    flat = prelu_shape(x.shape)
    prelu_backward_ncp(dy.reshape(flat), x.reshape(flat), slope, True, dx.reshape(flat), dslope_c)
    return dx, (dslope_c.sum(keepdims=True) if slope.shape[0] == 1 else dslope_c)
