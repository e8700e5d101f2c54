"""Fully connected (inner product) layer, forward and backward, dense weights.

    y[n, o] = b[o] + Σ_i W[o, i] · x[n, i]          (Caffe's InnerProduct layout: W is (O, I))

Each kernel splits one matrix product into column blocks, one per thread, each a
single-threaded BLAS call (see blas.py for why BLAS runs inside Numba's threads).
"""

import numpy as np
from numba import njit, prange

from ._args import check_output, float_array, where
from ._jit import JIT_PARALLEL, chunk_bounds, chunk_count
from .blas import check_gemm_sizes, gemm

# Narrower blocks than this make per-call overhead dominate the product.
_MIN_BLOCK = 64


@njit(**JIT_PARALLEL)
def linear_forward_gemm(x, weight, bias, chunks, y):
    # x: (N, I); weight: (O, I); bias: (O,); y: (N, O), every cell written
    # y[:, block] = x · W[block]ᵀ + b[block], one block of output features per chunk
    N, O = y.shape
    for t in prange(chunks):
        lo, hi = chunk_bounds(t, chunks, O)
        gemm(x, weight[lo:hi], y[:, lo:hi], False, True)
        for n in range(N):
            y[n, lo:hi] += bias[lo:hi]


@njit(**JIT_PARALLEL)
def linear_backward_gemm(dy, x, weight, chunks, need_input, need_weight, dx, dweight):
    # dy: (N, O); x: (N, I); weight: (O, I); dx: (N, I) and dweight: (O, I), every cell written
    # dx[:, block] = dy · W[:, block]   (blocks of input features)
    # dW[block]    = dy[:, block]ᵀ · x   (blocks of output features)
    N, O = dy.shape
    I = weight.shape[1]
    for t in prange(chunks):
        if need_input:
            lo, hi = chunk_bounds(t, chunks, I)
            gemm(dy, weight[:, lo:hi], dx[:, lo:hi])
        if need_weight:
            lo, hi = chunk_bounds(t, chunks, O)
            gemm(dy[:, lo:hi], x, dweight[lo:hi], True, False)


def linear_forward_dense(x, weight, bias):
    """y = x · Wᵀ + b for checked 2-D arguments; ``bias`` may be None."""
    N, O = x.shape[0], weight.shape[0]
    if bias is None:
        bias = np.zeros(O, dtype=x.dtype)
    y = np.empty((N, O), dtype=x.dtype)
    linear_forward_gemm(x, weight, bias, chunk_count(O, _MIN_BLOCK), y)
    return y


def linear_backward_dense(dy, x, weight, *, need_input=True, need_weight=True):
    """Gradients of ``linear_forward_dense`` → (dx, dweight, dbias); entries not asked for are None.

        dx = dy · W,   dW = dyᵀ · x,   db[o] = Σ_n dy[n, o]
    """
    N = dy.shape[0]
    O, I = weight.shape
    dx = np.empty((N, I), dtype=dy.dtype) if need_input else np.empty((0, 0), dtype=dy.dtype)
    dweight = np.empty((O, I), dtype=dy.dtype) if need_weight else np.empty((0, 0), dtype=dy.dtype)
    if x is None:
        x = np.empty((0, 0), dtype=dy.dtype)
    chunks = chunk_count(min(O, I) if need_weight and need_input else (I if need_input else O),
                         _MIN_BLOCK)
    linear_backward_gemm(dy, x, weight, chunks, need_input, need_weight, dx, dweight)
    return (dx if need_input else None, dweight if need_weight else None,
            dy.sum(axis=0) if need_weight else None)


def _check(x, weight, bias, at):
    x = float_array(x, "input", at, ndim=2)
    weight = float_array(weight, "weight", at, ndim=2, dtype=x.dtype, finite=False)
    if weight.shape[1] != x.shape[1]:
        raise ValueError(
            f"{at}: weight shape {weight.shape} does not match input features {x.shape[1]}")
    if bias is not None:
        bias = float_array(bias, "bias", at, ndim=1, dtype=x.dtype, finite=False)
        if bias.shape != (weight.shape[0],):
            raise ValueError(
                f"{at}: bias shape {bias.shape} does not match output features {weight.shape[0]}")
    check_gemm_sizes(*x.shape, *weight.shape, at=at)
    return x, weight, bias


def linear_forward(x, weight, bias=None, *, name="linear_forward"):
    """Inner product of ``x`` (N, I) with ``weight`` (O, I) plus ``bias`` (O,) or None → y (N, O).

    Flatten a 4-D input first (``flatten_forward``), as Caffe's InnerProduct does.
    """
    at = where(name, "InnerProduct")
    x, weight, bias = _check(x, weight, bias, at)
    return check_output(linear_forward_dense(x, weight, bias), at, {"weight": weight, "bias": bias})


def linear_backward(dy, x, weight, *, name="linear_backward"):
    """Gradients of ``linear_forward`` → (dx, dweight, dbias) given the output gradient ``dy``."""
    at = where(name, "InnerProduct")
    x, weight, _ = _check(x, weight, None, at)
    dy = float_array(dy, "output gradient", at, ndim=2, dtype=x.dtype)
    if dy.shape != (x.shape[0], weight.shape[0]):
        raise ValueError(f"{at}: output gradient shape {dy.shape} does not match the output "
                         f"{(x.shape[0], weight.shape[0])}")
    dx, dweight, dbias = linear_backward_dense(dy, x, weight)
    check_output(dx, at, {"weight": weight})
    return dx, dweight, dbias
