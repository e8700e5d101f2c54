"""Fully connected (inner product) layer, forward and backward, on a weight in any of the
engine's formats (``engine/formats``).

    y[n, o] = b[o] + Σ_i W[o, i] · x[n, i]          (Caffe's InnerProduct layout: W is (O, I))

A dense weight: each kernel splits one matrix product into column blocks, one per thread, each a
single-threaded BLAS call (see blas.py for why BLAS runs inside Numba's threads). A codebook
decodes blocks of rows for the same products; sparse formats (CSR, sparse codebook, Huffman)
multiply each decoded row of stored weights (``row_entries``) or, at a small batch, walk each
row's stored entries once per example (``row_dot``, EIE). The weight gradient is the
format's own: CSR's stored values', a codebook's per-centroid sums (Deep Compression eq. 3). The
Net's Linear calls ``linear_forward_format`` / ``linear_backward_format``; ``linear_forward`` /
``linear_backward`` are the checked functional API on a dense weight array.
"""

import numpy as np
from numba import njit, prange, uint64

from ._args import check_output, float_array, where
from ._jit import JIT, JIT_PARALLEL, chunk_bounds, chunk_count, run_chunks, work_chunks
from ._loops import axpy, dot, sparse_dot, sparse_row_product
from .blas import check_gemm_sizes, gemm
from .conv import _same_dtype
from .formats.base import (has_row_direct, row_dot_backward, row_entries, rows_dot,
                           weight_rows)
from . import quantized

# Narrower blocks than this make per-call overhead dominate the product.
_MIN_BLOCK = 64
# Rows the direct walk hands a format at a time: a sparse FC row of 4096 columns at 90 %
# pruned is about 1.6 KiB of entries, so a block stays in L1 while every example walks it.
_DIRECT_ROWS = 16


@njit(**JIT)
def linear_forward_gemm_chunk(t, x, weight, bias, chunks, y):
    # x: (N, I); weight: (O, I); bias: (O,); y: (N, O), the columns of chunk t written
    # y[:, block] = x · W[block]ᵀ + b[block], block t of ``chunks`` blocks of output features
    lo, hi = chunk_bounds(t, chunks, y.shape[1])
    # weight[lo:hi, :] is typed as a strided view, as conv's operand is: conv and linear
    # forwards share one compiled gemm (np.bool_ flags: runtime values, not literals)
    gemm(x, weight[lo:hi, :], y[:, lo:hi], np.bool_(False), np.bool_(True), 1.0, 0.0)
    for n in range(y.shape[0]):
        row = y[n]
        for o in range(uint64(lo), uint64(hi)):  # unsigned: no wraparound test, vectorised
            row[o] += bias[o]


@njit(**JIT_PARALLEL)
def linear_forward_gemm(x, weight, bias, chunks, y):
    # ``linear_forward_gemm_chunk`` for every chunk, one per thread
    for t in prange(chunks):
        linear_forward_gemm_chunk(np.int64(t), x, weight, bias, chunks, y)


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
            gemm(dy, weight[:, lo:hi], dx[:, lo:hi], np.bool_(False), np.bool_(False), 1.0, 0.0)
        if need_weight:
            lo, hi = chunk_bounds(t, chunks, O)
            gemm(dy[:, lo:hi], x, dweight[lo:hi], np.bool_(True), np.bool_(False), 1.0, 0.0)


@njit(**JIT_PARALLEL)
def linear_forward_blocked(x, W, bias, chunks, block, y):
    # x: (N, I); W: dense-pattern operand (a codebook); bias: (O,); y: (N, O), every cell written
    # y[:, rows] = x · W[rows]ᵀ + b[rows], ``block`` rows decoded into scratch at a time
    N, O = y.shape
    for t in prange(chunks):
        scratch = np.empty((block, x.shape[1]), dtype=x.dtype)
        lo, hi = chunk_bounds(t, chunks, O)
        for r0 in range(lo, hi, block):
            r1 = min(r0 + block, hi)
            gemm(x, weight_rows(W, r0, r1, scratch), y[:, r0:r1], np.bool_(False), np.bool_(True),
                 1.0, 0.0)
            for n in range(N):
                y[n, r0:r1] += bias[r0:r1]


@njit(**JIT_PARALLEL)
def linear_backward_blocked(dy, x, W, chunks, block, need_input, need_weight, dx_parts, dweight):
    # dy: (N, O); x: (N, I); dx_parts: (chunks, N, I) accumulated into, one partial per chunk;
    # dweight: (O, I), rows written by the chunk that owns them
    # dx = Σ_blocks dy[:, rows] · W[rows];   dW[rows] = dy[:, rows]ᵀ · x
    O = dy.shape[1]
    for t in prange(chunks):
        scratch = np.empty((block if need_input else 0, x.shape[1]), dtype=dy.dtype)
        lo, hi = chunk_bounds(t, chunks, O)
        for r0 in range(lo, hi, block):
            r1 = min(r0 + block, hi)
            if need_input:
                gemm(dy[:, r0:r1], weight_rows(W, r0, r1, scratch), dx_parts[t], np.bool_(False),
                     np.bool_(False), 1.0, 1.0)
            if need_weight:
                gemm(dy[:, r0:r1], x, dweight[r0:r1], np.bool_(True), np.bool_(False), 1.0, 0.0)


@njit(**JIT_PARALLEL)
def linear_forward_sparse(xT, W, bias, chunks, max_row, yT):
    # xT: (I, N) the batch transposed; W: sparse operand (row_entries); bias: (O,)
    # yT: (O, N), every cell written
    # yT[o] = b[o] + Σ_{(k, v) ∈ row o} v · xT[k]  (rows split over chunks; a row is decoded
    # once for the whole batch and its entries stream over contiguous rows of xT)
    O, N = yT.shape
    x1 = xT.reshape(xT.shape[0] * N)  # the input itself when N == 1
    for t in prange(chunks):
        ecols = np.empty(max_row, dtype=np.int64)
        evals = np.empty(max_row, dtype=xT.dtype)
        eslots = np.empty(0, dtype=np.int64)
        lo, hi = chunk_bounds(t, chunks, O)
        for o in range(lo, hi):
            cols_o, vals_o, slots_o, count = row_entries(W, o, ecols, evals, eslots, False)
            if N == 1:  # a sparse dot product
                yT[o, 0] = bias[o] + sparse_dot(cols_o, vals_o, x1, count)
            else:
                out = yT[o]
                out[:] = bias[o]
                sparse_row_product(out, xT, cols_o, vals_o, count)


@njit(**JIT_PARALLEL)
def linear_forward_direct(x, W, bias, chunks, block, y):
    # x: (N, I); W: sparse operand with a direct walk (row_dot); bias: (O,)
    # y: (N, O), every cell written
    # y[n, o] = b[o] + Σ_{(k, v) ∈ row o} v · x[n, k]   (EIE: each example walks the row's stored
    # entries; nothing is decoded into buffers, so the weight is read at its stored size).
    # Blocks of ``block`` rows (rows_dot: a format may walk several rows at once), each walked
    # by every example while its entries are in cache.
    N, O = y.shape
    for t in prange(chunks):
        lo, hi = chunk_bounds(t, chunks, O)
        for r0 in range(lo, hi, block):
            r1 = min(r0 + block, hi)
            for n in range(N):
                rows_dot(W, r0, r1, x[n], bias, y[n])


@njit(**JIT_PARALLEL)
def linear_backward_direct(dy, x, W, chunks, need_input, need_weight, dx_parts, dvalue_parts):
    # dy: (N, O); x: (N, I), read only for the weight gradient; dx_parts: (chunks, N, I) and
    # dvalue_parts: (chunks, values), accumulated into, one partial per chunk
    # dx[n, k] += dy[n, o] · v;   dvalues[slot] += dy[n, o] · x[n, k]   for each entry (o, k, v)
    N, O = dy.shape
    no_input = dx_parts.reshape(-1)[:0]
    for t in prange(chunks):
        lo, hi = chunk_bounds(t, chunks, O)
        for o in range(lo, hi):
            for n in range(N):
                row_dot_backward(W, o, dy[n, o], x[n] if need_weight else no_input, need_input,
                                 need_weight, dx_parts[t, n] if need_input else no_input,
                                 dvalue_parts[t])


@njit(**JIT_PARALLEL)
def linear_backward_sparse(dyT, xT, W, chunks, max_row, need_input, need_weight, dxT_parts,
                           dvalue_parts):
    # dyT: (O, N); xT: (I, N); dxT_parts: (chunks, I, N) and dvalue_parts: (chunks, values),
    # accumulated into, one partial per chunk (rows of different chunks share columns and slots)
    # dxT[k] += v · dyT[o];   dvalues[slot] += dyT[o] · xT[k]   for each entry (o, k, v)
    O = dyT.shape[0]
    for t in prange(chunks):
        ecols = np.empty(max_row, dtype=np.int64)
        evals = np.empty(max_row, dtype=dyT.dtype)
        eslots = np.empty(max_row, dtype=np.int64)
        lo, hi = chunk_bounds(t, chunks, O)
        for o in range(lo, hi):
            cols_o, vals_o, slots_o, count = row_entries(W, o, ecols, evals, eslots, need_weight)
            g = dyT[o]
            if need_input:
                for e in range(count):
                    axpy(dxT_parts[t, cols_o[e]], vals_o[e], g)
            if need_weight:
                for e in range(count):
                    dvalue_parts[t, slots_o[e]] += dot(g, xT[cols_o[e]])


# Rows a codebook decodes into scratch at a time (64 rows of 4096 float32 = 1 MiB).
_CODEBOOK_BLOCK = 64

# Largest batch at which a sparse format's direct walk (linear_forward_direct: each example
# walks the stored entries) beats decoding each row once for the whole batch
# (linear_forward_sparse). Measured on FC 4096² at 90 % pruned, 5-bit codes and gaps, one thread,
# CPU ms direct / rows at batch 1, 2, 4, 8, 16 (best of 5, load average 5 on 2 cores):
# CSR 1.29 / 1.65, 2.52 / 3.03, 5.03 / 4.37, 9.88 / 5.53, 19.6 / 5.93; sparse codebook
# 0.92 / 4.98, 1.85 / 6.62, 3.69 / 8.42, 7.32 / 8.66, 14.7 / 9.11; Huffman 5.94 / 23.7,
# 11.7 / 25.5, 23.4 / 27.4, 46.9 / 27.8, 93.7 / 28.4 (bench.py shows the kernel not picked
# beside the one picked).
DIRECT_MAX_BATCH = {"csr": 2, "sparse_codebook": 8, "rans": 8, "cm": 8,
                    "huffman": 4}  # rans, cm: a sparse codebook


def direct_walk(fmt, W, N, direct=None):
    """Whether a sparse layer of batch N runs the direct walk: ``direct`` if given, else
    N ≤ ``DIRECT_MAX_BATCH`` of the format; a format without a ``row_dot`` never does."""
    if not has_row_direct(W):
        return False
    return N <= DIRECT_MAX_BATCH.get(fmt.kind, 0) if direct is None else bool(direct)


def linear_forward_format(x, fmt, bias, *, direct=None):
    """y = x · Wᵀ + b with W in any weight format (checked 2-D x; ``bias`` may be None).

    A sparse format runs the direct walk (every example walks the stored entries) or the row
    kernel (each row decoded once for the batch) as ``direct_walk`` picks; ``direct`` forces
    one (the bench and tests compare the two)."""
    _same_dtype(x, fmt)
    if fmt.dense_view:
        return linear_forward_dense(x, fmt.weight.reshape(fmt.rows, fmt.cols), bias)
    y = quantized.linear_forward(x, fmt, bias)  # the format's integer kernel, where it applies
    if y is not None:
        return y
    N, O = x.shape[0], fmt.rows
    if bias is None:
        bias = np.zeros(O, dtype=x.dtype)
    y = np.empty((N, O), dtype=x.dtype)
    W = fmt.operand() if fmt.sparse else None
    if fmt.sparse and direct_walk(fmt, W, N, direct):
        linear_forward_direct(x, W, bias, chunk_count(O, _MIN_BLOCK), _DIRECT_ROWS, y)
    elif fmt.sparse:
        yT = np.empty((O, N), dtype=x.dtype)
        linear_forward_sparse(np.ascontiguousarray(x.T), W, bias,
                              chunk_count(O, _MIN_BLOCK), max(fmt.max_row_entries(), 1), yT)
        y[...] = yT.T
    else:
        linear_forward_blocked(x, fmt.operand(), bias, chunk_count(O, _MIN_BLOCK),
                               _CODEBOOK_BLOCK, y)
    return y


def linear_backward_format(dy, x, fmt, *, need_input=True, need_weight=True, direct=None):
    """Gradients with W in any format → (dx, {trainable array name: gradient}, dbias); the
    weight gradient is the format's own (see ``conv2d_backward_format``); ``direct`` as in
    ``linear_forward_format``."""
    _same_dtype(dy, fmt)
    if fmt.dense_view:
        dx, dw, db = linear_backward_dense(dy, x, fmt.weight.reshape(fmt.rows, fmt.cols),
                                           need_input=need_input, need_weight=need_weight)
        return dx, (fmt.reduce_dense_grad(dw.reshape(fmt.shape)) if need_weight else None), db
    N, O = dy.shape
    I = fmt.cols
    chunks = chunk_count(O, _MIN_BLOCK)
    dx_parts = np.zeros((chunks, N, I) if need_input else (chunks, 0, 0), dtype=dy.dtype)
    if x is None:  # only dx wanted; the kernels still read the input's width
        x = np.empty((0, I), dtype=dy.dtype)
    W = fmt.operand() if fmt.sparse else None
    if fmt.sparse and direct_walk(fmt, W, N, direct):
        values = fmt.arrays()[fmt.trainable[0]]
        parts = np.zeros((chunks, values.size if need_weight else 0), dtype=dy.dtype)
        linear_backward_direct(dy, x, W, chunks, need_input, need_weight, dx_parts, parts)
        grads = fmt.slot_grads(parts.sum(axis=0)) if need_weight else None
    elif fmt.sparse:
        values = fmt.arrays()[fmt.trainable[0]]
        parts = np.zeros((chunks, values.size if need_weight else 0), dtype=dy.dtype)
        dxT_parts = np.zeros((chunks, I, N) if need_input else (chunks, 0, 0), dtype=dy.dtype)
        linear_backward_sparse(np.ascontiguousarray(dy.T), np.ascontiguousarray(x.T),
                               W, chunks, max(fmt.max_row_entries(), 1), need_input,
                               need_weight, dxT_parts, parts)
        grads = fmt.slot_grads(parts.sum(axis=0)) if need_weight else None
        dx_parts = dxT_parts.transpose(0, 2, 1)
    else:
        dweight = np.empty((O, I) if need_weight else (0, 0), dtype=dy.dtype)
        linear_backward_blocked(dy, x, fmt.operand(), chunks, _CODEBOOK_BLOCK, need_input,
                                need_weight, dx_parts, dweight)
        grads = fmt.reduce_dense_grad(dweight.reshape(fmt.shape)) if need_weight else None
    dx = np.ascontiguousarray(dx_parts.sum(axis=0)) if need_input else None
    return dx, grads, (dy.sum(axis=0) if need_weight else None)


def linear_forward_dense(x, weight, bias):
    """y = x · Wᵀ + b for checked 2-D arguments; ``bias`` may be None."""
    N, O = x.shape[0], weight.shape[0]
    if bias is None:
        bias = np.zeros(O, dtype=x.dtype)
    y = np.empty((N, O), dtype=x.dtype)
    chunks = work_chunks(O // _MIN_BLOCK, N * O * weight.shape[1])
    run_chunks(linear_forward_gemm, linear_forward_gemm_chunk, chunks, x, weight, bias, chunks, y)
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
