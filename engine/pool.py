"""Max and average pooling with Caffe's semantics, forward and backward; global average pooling.

Output size (Caffe's PoolingLayer::Reshape):

    OH = ⌈(H + 2·ph − kh) / sh⌉ + 1     (ceil mode, Caffe's default; ⌊…⌋ in floor mode)
    with padding (on either axis), if (OH − 1)·sh ≥ H + ph: OH −= 1   (the last window must
    start inside the input)

Window (oy, ox) covers rows [oy·sh − ph, oy·sh − ph + kh) clipped to the input; max pooling takes
the first maximum in scan order and its backward routes the gradient there (Caffe's mask). Average
pooling divides by the window clipped to the *padded* input, so padding counts as zeros, as in
Caffe (and torch's ``count_include_pad=True``); with ``count_pad=False`` it divides by the window
clipped to the input, as TensorFlow/Keras 'same' pooling does (torch's
``count_include_pad=False``).
"""

import math

import numpy as np
from numba import njit, prange

from ._args import float_array, pair, where
from ._jit import JIT, JIT_INLINE, JIT_PARALLEL, chunk_bounds, run_chunks, work_chunks


def pool_output_size(size, kernel, stride, padding, ceil_mode=True, *, padded=None):
    """Caffe's pooled size along one axis (see the module docstring).

    ``padded``: whether the layer is padded on any axis, which is when Caffe applies its
    last-window rule, to both axes; default: ``padding > 0``.
    """
    span = size + 2 * padding - kernel
    pooled = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if (padding > 0 if padded is None else padded) and (pooled - 1) * stride >= size + padding:
        pooled -= 1
    return pooled


# ---------------------------------------------------------------------------------------------
# Kernels


@njit(**JIT)
def max_pool_plane_2x2(plane, y, argmax):
    # plane: (H, W); y, argmax: (oh, ow) with 2·oh ≤ H, 2·ow ≤ W (every window inside)
    # y[oy, ox] = max of plane[2oy:2oy+2, 2ox:2ox+2], argmax its flat index (first maximum in
    # scan order), the general loop's result with the four reads written out
    W = plane.shape[1]
    for oy in range(y.shape[0]):
        top = plane[2 * oy]
        bottom = plane[2 * oy + 1]
        for ox in range(y.shape[1]):
            i = 2 * ox
            best = top[i]
            where_best = 2 * oy * W + i
            if top[i + 1] > best:
                best = top[i + 1]
                where_best = 2 * oy * W + i + 1
            if bottom[i] > best:
                best = bottom[i]
                where_best = (2 * oy + 1) * W + i
            if bottom[i + 1] > best:
                best = bottom[i + 1]
                where_best = (2 * oy + 1) * W + i + 1
            y[oy, ox] = best
            argmax[oy, ox] = where_best


@njit(**JIT)
def max_pool_plane_2x2_values(plane, y):
    # plane: (H, W); y: (oh, ow) with 2·oh ≤ H, 2·ow ≤ W (every window inside)
    # y[oy, ox] = max of plane[2oy:2oy+2, 2ox:2ox+2]: ``max_pool_plane_2x2``'s values, the same
    # comparisons (the first maximum in scan order: the same float, signed zeros included),
    # without the argmax a pass that keeps nothing for the backward never reads
    for oy in range(y.shape[0]):
        top = plane[2 * oy]
        bottom = plane[2 * oy + 1]
        out = y[oy]
        for ox in range(y.shape[1]):
            i = 2 * ox
            best = top[i]
            v = top[i + 1]
            best = v if v > best else best
            v = bottom[i]
            best = v if v > best else best
            v = bottom[i + 1]
            out[ox] = v if v > best else best


@njit(**JIT)
def max_pool_plane(plane, kh, kw, sh, sw, ph, pw, y, argmax):
    # plane: (H, W); y, argmax: (oh, ow), every cell written
    # y[oy, ox] = max over the window; argmax = its flat index iy·W + ix (first maximum)
    H, W = plane.shape
    oh, ow = y.shape
    for oy in range(oh):
        y0 = max(oy * sh - ph, 0)
        y1 = min(oy * sh - ph + kh, H)
        for ox in range(ow):
            x0 = max(ox * sw - pw, 0)
            x1 = min(ox * sw - pw + kw, W)
            best = plane[y0, x0]
            where_best = y0 * W + x0
            for iy in range(y0, y1):
                for ix in range(x0, x1):
                    if plane[iy, ix] > best:
                        best = plane[iy, ix]
                        where_best = iy * W + ix
            y[oy, ox] = best
            argmax[oy, ox] = where_best


@njit(**JIT_INLINE)
def _whole_2x2_windows(x, y, kh, kw, sh, sw, ph, pw):
    # The common 2×2, stride-2 pooling of x (N, C, H, W) into y (N, C, oh, ow) with every window
    # inside: ~3× faster written out (max_pool_plane_2x2). The chunk functions test it, not
    # max_pool_plane, so that neither plane function compiles the other.
    return (kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0
            and 2 * y.shape[2] <= x.shape[2] and 2 * y.shape[3] <= x.shape[3])


@njit(**JIT)
def max_pool2d_forward_chunk(t, x, kh, kw, sh, sw, ph, pw, chunks, y, argmax):
    # x: (N, C, H, W); y: (N, C, oh, ow); argmax: (N, C, oh, ow) int64, the planes of chunk t
    # written: chunk t of the N·C planes split into ``chunks`` runs (``max_pool_plane`` each)
    C = x.shape[1]
    lo, hi = chunk_bounds(t, chunks, x.shape[0] * C)
    two_by_two = _whole_2x2_windows(x, y, kh, kw, sh, sw, ph, pw)
    for nc in range(lo, hi):
        n = nc // C
        c = nc % C
        if two_by_two:
            max_pool_plane_2x2(x[n, c], y[n, c], argmax[n, c])
        else:
            max_pool_plane(x[n, c], kh, kw, sh, sw, ph, pw, y[n, c], argmax[n, c])


@njit(**JIT)
def max_pool2d_values_chunk(t, x, kh, kw, sh, sw, ph, pw, chunks, y):
    # x: (N, C, H, W); y: (N, C, oh, ow), the planes of chunk t written: the values of
    # ``max_pool2d_forward_chunk``, for a pass that keeps no argmax (the common 2×2 windows
    # skip it; any other pooling writes it to a per-plane scratch)
    C = x.shape[1]
    oh, ow = y.shape[2], y.shape[3]
    two_by_two = _whole_2x2_windows(x, y, kh, kw, sh, sw, ph, pw)
    scratch = np.empty((0 if two_by_two else oh, ow), dtype=np.int64)
    lo, hi = chunk_bounds(t, chunks, x.shape[0] * C)
    for nc in range(lo, hi):
        n = nc // C
        c = nc % C
        if two_by_two:
            max_pool_plane_2x2_values(x[n, c], y[n, c])
        else:
            max_pool_plane(x[n, c], kh, kw, sh, sw, ph, pw, y[n, c], scratch)


@njit(**JIT_PARALLEL)
def max_pool2d_values_nchw(x, kh, kw, sh, sw, ph, pw, chunks, y):
    # ``max_pool2d_values_chunk`` for every chunk, one per thread
    for t in prange(chunks):
        max_pool2d_values_chunk(np.int64(t), x, kh, kw, sh, sw, ph, pw, chunks, y)


@njit(**JIT_PARALLEL)
def max_pool2d_forward_nchw(x, kh, kw, sh, sw, ph, pw, chunks, y, argmax):
    # ``max_pool2d_forward_chunk`` for every chunk, one per thread
    for t in prange(chunks):
        max_pool2d_forward_chunk(np.int64(t), x, kh, kw, sh, sw, ph, pw, chunks, y, argmax)


def max_pool2d_nchw(x, kh, kw, sh, sw, ph, pw, y, argmax):
    """Max pooling of checked arguments into ``y`` and ``argmax`` (``max_pool2d_forward_nchw``),
    in one chunk per thread, or in this thread when the input is small (``work_chunks``)."""
    chunks = work_chunks(x.shape[0] * x.shape[1], x.size)
    run_chunks(max_pool2d_forward_nchw, max_pool2d_forward_chunk, chunks, x, kh, kw, sh, sw, ph,
               pw, chunks, y, argmax)


def max_pool2d_values(x, kh, kw, sh, sw, ph, pw, y):
    """``max_pool2d_nchw``'s ``y`` alone (``max_pool2d_values_nchw``), for a pass that keeps
    nothing for the backward."""
    chunks = work_chunks(x.shape[0] * x.shape[1], x.size)
    run_chunks(max_pool2d_values_nchw, max_pool2d_values_chunk, chunks, x, kh, kw, sh, sw, ph, pw,
               chunks, y)


@njit(**JIT_PARALLEL)
def max_pool2d_backward_nchw(dy, argmax, dx):
    # dy, argmax: (N, C, oh, ow); dx: (N, C, H, W), accumulated into
    # dx[n, c].flat[argmax[n, c, oy, ox]] += dy[n, c, oy, ox]   (one plane per iteration: race-free)
    N, C, H, W = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for oy in range(oh):
            for ox in range(ow):
                k = argmax[n, c, oy, ox]
                dx[n, c, k // W, k % W] += dy[n, c, oy, ox]


@njit(**JIT_PARALLEL)
def avg_pool2d_forward_nchw(x, kh, kw, sh, sw, ph, pw, count_pad, y):
    # x: (N, C, H, W); y: (N, C, oh, ow), every cell written
    # y[n, c, oy, ox] = Σ_window x / |window clipped to the padded input| (count_pad), or to
    # the input
    N, C, H, W = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        plane = x[n, c]
        for oy in range(oh):
            ys = oy * sh - ph
            ye = min(ys + kh, H + ph)
            rows = ye - ys
            y0 = max(ys, 0)
            y1 = min(ye, H)
            for ox in range(ow):
                xs = ox * sw - pw
                xe = min(xs + kw, W + pw)
                x0 = max(xs, 0)
                x1 = min(xe, W)
                count = rows * (xe - xs) if count_pad else (y1 - y0) * (x1 - x0)
                acc = 0.0
                for iy in range(y0, y1):
                    for ix in range(x0, x1):
                        acc += plane[iy, ix]
                y[n, c, oy, ox] = acc / count


@njit(**JIT_PARALLEL)
def avg_pool2d_backward_nchw(dy, kh, kw, sh, sw, ph, pw, count_pad, dx):
    # dy: (N, C, oh, ow); dx: (N, C, H, W), accumulated into
    # dx[n, c, iy, ix] += dy[n, c, oy, ox] / |window (oy, ox)| for every window holding (iy, ix)
    # (the forward's divisor: clipped to the padded input with count_pad, else to the input)
    N, C, H, W = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for oy in range(oh):
            ys = oy * sh - ph
            ye = min(ys + kh, H + ph)
            rows = ye - ys
            y0 = max(ys, 0)
            y1 = min(ye, H)
            for ox in range(ow):
                xs = ox * sw - pw
                xe = min(xs + kw, W + pw)
                x0 = max(xs, 0)
                x1 = min(xe, W)
                count = rows * (xe - xs) if count_pad else (y1 - y0) * (x1 - x0)
                share = dy[n, c, oy, ox] / count
                for iy in range(y0, y1):
                    for ix in range(x0, x1):
                        dx[n, c, iy, ix] += share


# ---------------------------------------------------------------------------------------------
# Checked functional API


def pool2d_geometry(in_shape, kernel, stride=None, padding=0, ceil_mode=True, *, at="pool2d"):
    """Check pooling arguments against an input (C, H, W) → (kernel, stride, padding, out (C, OH, OW))."""
    kernel = pair(kernel, "kernel", at, minimum=1)
    stride = kernel if stride is None else pair(stride, "stride", at, minimum=1)
    padding = pair(padding, "padding", at, minimum=0)
    if len(in_shape) != 3:
        raise ValueError(f"{at}: input must be (N, C, H, W), got per-example shape {tuple(in_shape)}")
    C, H, W = in_shape
    if padding[0] >= kernel[0] or padding[1] >= kernel[1]:
        raise ValueError(f"{at}: padding {padding} must be smaller than the kernel {kernel} (as in Caffe)")
    # Caffe applies the last-window rule to both axes when either is padded (`pad_h_ || pad_w_`).
    padded = padding != (0, 0)
    oh = pool_output_size(H, kernel[0], stride[0], padding[0], ceil_mode, padded=padded)
    ow = pool_output_size(W, kernel[1], stride[1], padding[1], ceil_mode, padded=padded)
    if oh < 1 or ow < 1:
        raise ValueError(f"{at}: kernel {kernel} does not fit the input {H}x{W} padded by {padding}")
    # Caffe keeps a last window that starts past the input when there is no padding (kernel <
    # stride in ceil mode); it would pool nothing, so refuse it rather than invent a value.
    if (oh - 1) * stride[0] - padding[0] >= H or (ow - 1) * stride[1] - padding[1] >= W:
        raise ValueError(f"{at}: with kernel {kernel}, stride {stride} and ceil mode the last "
                         f"window starts outside the {H}x{W} input; use floor mode")
    return kernel, stride, padding, (C, oh, ow)


def _pool_check(x, kernel, stride, padding, ceil_mode, at):
    x = float_array(x, "input", at, ndim=4)
    kernel, stride, padding, out = pool2d_geometry(x.shape[1:], kernel, stride, padding, ceil_mode,
                                                   at=at)
    return x, kernel + stride + padding, (x.shape[0],) + out


def _dy_check(dy, x, out_shape, at):
    dy = float_array(dy, "output gradient", at, ndim=4, dtype=x.dtype)
    if dy.shape != out_shape:
        raise ValueError(f"{at}: output gradient shape {dy.shape} does not match the output {out_shape}")
    return dy


def max_pool2d_forward(x, kernel, stride=None, padding=0, ceil_mode=True, *, name="max_pool2d"):
    """Max pooling of ``x`` (N, C, H, W) → y (N, C, OH, OW); ``stride`` defaults to ``kernel``."""
    x, args, out_shape = _pool_check(x, kernel, stride, padding, ceil_mode, where(name, "Pooling"))
    y = np.empty(out_shape, dtype=x.dtype)
    max_pool2d_values(x, *args, y)
    return y


def max_pool2d_backward(dy, x, kernel, stride=None, padding=0, ceil_mode=True, *,
                        name="max_pool2d"):
    """Gradient of ``max_pool2d_forward`` w.r.t. x: dy routed to each window's first maximum."""
    at = where(name, "Pooling")
    x, args, out_shape = _pool_check(x, kernel, stride, padding, ceil_mode, at)
    dy = _dy_check(dy, x, out_shape, at)
    argmax = np.empty(out_shape, dtype=np.int64)
    max_pool2d_nchw(x, *args, np.empty(out_shape, dtype=x.dtype), argmax)
    dx = np.zeros_like(x)
    max_pool2d_backward_nchw(dy, argmax, dx)
    return dx


def avg_pool2d_forward(x, kernel, stride=None, padding=0, ceil_mode=True, *, count_pad=True,
                       name="avg_pool2d"):
    """Average pooling → y (N, C, OH, OW): Caffe's AVE (padding counts as zeros), or with
    ``count_pad=False`` the mean of the window's cells inside the input (TensorFlow's)."""
    x, args, out_shape = _pool_check(x, kernel, stride, padding, ceil_mode, where(name, "Pooling"))
    y = np.empty(out_shape, dtype=x.dtype)
    avg_pool2d_forward_nchw(x, *args, bool(count_pad), y)
    return y


def avg_pool2d_backward(dy, x, kernel, stride=None, padding=0, ceil_mode=True, *,
                        count_pad=True, name="avg_pool2d"):
    """Gradient of ``avg_pool2d_forward`` w.r.t. x."""
    at = where(name, "Pooling")
    x, args, out_shape = _pool_check(x, kernel, stride, padding, ceil_mode, at)
    dy = _dy_check(dy, x, out_shape, at)
    dx = np.zeros_like(x)
    avg_pool2d_backward_nchw(dy, *args, bool(count_pad), dx)
    return dx


def global_avg_pool2d_forward(x, *, name="global_avg_pool2d"):
    """Mean over each (H, W) plane: (N, C, H, W) → (N, C, 1, 1)."""
    x = float_array(x, "input", where(name, "Pooling"), ndim=4)
    return x.mean(axis=(2, 3), keepdims=True)


def global_avg_pool2d_backward(dy, x, *, name="global_avg_pool2d"):
    """dx[n, c, :, :] = dy[n, c] / (H·W)."""
    at = where(name, "Pooling")
    x = float_array(x, "input", at, ndim=4)
    dy = _dy_check(dy, x, x.shape[:2] + (1, 1), at)
    return np.broadcast_to(dy / (x.shape[2] * x.shape[3]), x.shape).copy()
