"""2-D convolution (cross-correlation, as in Caffe and torch), forward and backward, on a weight
in any of the engine's formats (``engine/formats``: dense, CSR, codebook, sparse codebook,
Huffman-coded sparse codebook).

    y[n, o, y, x] = b[o] + Σ_{c, i, j} W[o, c, i, j] · x[n, g·Cg + c, y·sh − ph + i·dh, x·sw − pw + j·dw]

where g = o // (O / groups) is the group of output channel o and Cg = C / groups.

Three algorithms, chosen by the shape and the weight's format:
- patches + GEMM, the general case: the input is copied once zero-padded and channels last,
  (N, G, H + 2ph, W + 2pw, Cg); for a slab of output rows of the batch (it may span examples)
  every receptive field becomes a row of a (rows·OW, kh·kw·Cg) patch matrix, built from runs
  of kw·Cg contiguous values, and each group is then one BLAS product with its weights,
  reordered to (O/G, kh·kw·Cg); the (rows·OW, O/G) result is written transposed into the
  output. Dense-pattern formats (dense, codebook) take this path (a codebook decodes its rows
  once per call). The backward runs the same layout the other way. Below
  ``CHANNELS_LAST_MIN`` input channels per group (a first layer) the runs are too short, and
  im2col takes over: a slab of one example's output rows becomes the columns of a
  (C·kh·kw, rows·OW) matrix, multiplied by each group's (O/G, Cg·kh·kw) weights.
- sparse formats (CSR, sparse codebook, Huffman): each row of stored weights, decoded once per
  example (``row_entries``), multiplies the example's whole im2col.
- direct depthwise (one input channel per group, e.g. MobileNet): a GEMM with one row of nine
  weights is all overhead, so these loops walk the image directly; a depthwise weight in another
  format is decoded to dense first (it is tiny).

The weight gradient is the format's own: dense dW, CSR's stored values', a codebook's
per-centroid sums (Deep Compression eq. 3); for a sparse format it comes from a dot product per
stored weight or, above ``SPARSE_DW_DENSITY`` stored, from one dense GEMM read at the stored
positions.

The Net's Conv2d calls ``conv2d_forward_format`` / ``conv2d_backward_format`` with a checked
``ConvGeometry``; ``conv2d_forward`` / ``conv2d_backward`` are the checked functional API on a
dense weight array.
"""

from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange, uint64

from ._args import check_output, float_array, pair, where
from ._jit import JIT, JIT_INLINE, JIT_PARALLEL, chunk_bounds, run_chunks, work_chunks
from ._loops import axpy, dot, multiply_add, sparse_row_product, taps
from .blas import check_gemm_sizes, gemm
from .formats.base import DenseArrays, row_entries, weight_rows
from . import quantized


# ---------------------------------------------------------------------------------------------
# Kernels


@njit(**JIT_INLINE)
def _valid_range(offset, stride, size, out_size):
    """Outputs o in [lo, hi) whose input position o·stride + offset lies in [0, size)."""
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    last = size - 1 - offset
    hi = last // stride + 1 if last >= 0 else 0
    hi = min(hi, out_size)
    return min(lo, hi), hi


@njit(**JIT)
def im2col_rows(x, n, kh, kw, sh, sw, ph, pw, dh, dw, ow, oy0, oy1, cols):
    # x: (N, C, H, W); cols: (C·kh·kw, ≥ (oy1 − oy0)·ow); output rows [oy0, oy1) of example n
    # cols[(c·kh + i)·kw + j, (y − oy0)·ow + x] = x[n, c, y·sh − ph + i·dh, x·sw − pw + j·dw], 0 in the padding
    # The copies index with unsigned integers: Numba then skips its negative-index wraparound
    # test per element, which kept these short loops scalar (2-4x faster on LeNet-5's conv1
    # and conv2 and on a padded 56 × 56 3×3 layer). Every index here is a valid position, ≥ 0.
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    image = x[n].ravel()
    for r in range(C * kh * kw):
        c = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        y_lo, y_hi = _valid_range(i * dh - ph, sh, H, oy1)
        x_lo, x_hi = _valid_range(j * dw - pw, sw, W, ow)
        dst = cols[r]
        for oy in range(oy0, oy1):
            col = uint64((oy - oy0) * ow)
            if oy < y_lo or oy >= y_hi:
                for k in range(uint64(ow)):
                    dst[col + k] = 0
                continue
            # image's flat position of x[n, c, iy, x_lo·sw − pw + j·dw], the first valid tap
            first = uint64((c * H + oy * sh - ph + i * dh) * W + x_lo * sw + j * dw - pw)
            for k in range(uint64(x_lo)):
                dst[col + k] = 0
            valid = col + uint64(x_lo)
            for k in range(uint64(x_hi - x_lo)):
                dst[valid + k] = image[first + k * uint64(sw)]
            for k in range(uint64(x_hi), uint64(ow)):
                dst[col + k] = 0


@njit(**JIT)
def col2im_rows(dcols, n, kh, kw, sh, sw, ph, pw, dh, dw, ow, oy0, oy1, dx):
    # dcols: (C·kh·kw, ≥ (oy1 − oy0)·ow); dx: (N, C, H, W), example n accumulated into
    # dx[n, c, y·sh − ph + i·dh, x·sw − pw + j·dw] += dcols[(c·kh + i)·kw + j, (y − oy0)·ow + x]
    # Unsigned indices, as in ``im2col_rows`` (same sums, in the same order).
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    image = dx[n].ravel()
    for r in range(C * kh * kw):
        c = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        y_lo, y_hi = _valid_range(i * dh - ph, sh, H, oy1)
        x_lo, x_hi = _valid_range(j * dw - pw, sw, W, ow)
        src = dcols[r]
        for oy in range(max(oy0, y_lo), y_hi):
            valid = uint64((oy - oy0) * ow + x_lo)
            first = uint64((c * H + oy * sh - ph + i * dh) * W + x_lo * sw + j * dw - pw)
            for k in range(uint64(x_hi - x_lo)):
                image[first + k * uint64(sw)] += src[valid + k]


@njit(**JIT_INLINE)
def _slab_columns(x, n, kh, kw, sh, sw, ph, pw, dh, dw, ow, oy0, oy1, cols, pointwise):
    """The im2col columns of output rows [oy0, oy1) of example n, (C·kh·kw, (oy1 − oy0)·ow)."""
    if pointwise:  # a 1×1 convolution's columns are the image itself
        C, H, W = x.shape[1], x.shape[2], x.shape[3]
        return x[n].reshape((C, H * W))[:, oy0 * ow:oy1 * ow]
    im2col_rows(x, n, kh, kw, sh, sw, ph, pw, dh, dw, ow, oy0, oy1, cols)
    return cols[:, :(oy1 - oy0) * ow]


@njit(**JIT)
def _slab_columns_contiguous(x, n, kh, kw, sh, sw, ph, pw, dh, dw, ow, oy0, oy1, buf, pointwise):
    """The im2col columns of output rows [oy0, oy1) of example n, (C·kh·kw, (oy1 − oy0)·ow), as
    a C-contiguous matrix (a view of the flat ``buf``, or of the image for a whole-plane 1×1
    slab): the sparse kernels' loops over its rows then have unit stride known to LLVM, and
    vectorise."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    width = (oy1 - oy0) * ow
    if pointwise:
        plane = x[n].reshape((C, H * W))
        if width == H * W:
            return plane
        cols = buf[:C * width].reshape((C, width))
        for c in range(C):
            cols[c, :] = plane[c, oy0 * ow:oy1 * ow]
        return cols
    cols = buf[:C * kh * kw * width].reshape((C * kh * kw, width))
    im2col_rows(x, n, kh, kw, sh, sw, ph, pw, dh, dw, ow, oy0, oy1, cols)
    return cols


@njit(**JIT_INLINE)
def _is_pointwise(kh, kw, sh, sw, ph, pw):
    return kh == 1 and kw == 1 and sh == 1 and sw == 1 and ph == 0 and pw == 0


@njit(**JIT_INLINE)
def pad_channels_last(x, n, g, ph, pw, plane):
    # x: (N, C, H, W); plane: (H + 2ph, W + 2pw, Cg), every cell written
    # plane[ph + y, pw + x, c] = x[n, g·Cg + c, y, x], 0 in the padding
    # Channels last makes a receptive field's kw·Cg values of one kernel row a contiguous run.
    H, W = x.shape[2], x.shape[3]
    Hp, Wp, Cg = plane.shape
    for yy in range(ph):
        plane[yy] = 0
    for yy in range(ph + H, Hp):
        plane[yy] = 0
    for yy in range(H):
        row = plane[ph + yy]
        row[:pw] = 0
        row[pw + W:] = 0
        inner = row[pw:pw + W]
        for c in range(Cg):
            src = x[n, g * Cg + c, yy]
            for k in range(W):
                inner[k, c] = src[k]


@njit(**JIT)
def patch_rows(plane, kh, kw, sh, sw, dh, dw, oy, ow, patches, q0):
    # plane: (Hp, Wp, Cg) padded channels-last image; patches: (≥ q0 + ow, kh·kw·Cg)
    # patches[q0 + x, (i·kw + j)·Cg + c] = plane[oy·sh + i·dh, x·sw + j·dw, c]
    # With dw = 1 a kernel row's kw pixels are one contiguous run of kw·Cg values. Unsigned
    # indices, as in ``im2col_rows``, so the copies vectorise.
    Wp, Cg = plane.shape[1], plane.shape[2]
    flat = plane.ravel()
    run = uint64(kw * Cg) if dw == 1 else uint64(Cg)
    taps_per_row = 1 if dw == 1 else kw
    for ox in range(ow):
        dst = patches[q0 + ox]
        for i in range(kh):
            for j in range(taps_per_row):
                first = uint64(((oy * sh + i * dh) * Wp + ox * sw + j * dw) * Cg)
                at = uint64((i * kw + j) * Cg)
                for k in range(run):
                    dst[at + k] = flat[first + k]


@njit(**JIT)
def patch_rows_add(dpatches, q0, kh, kw, sh, sw, dh, dw, oy, ow, plane):
    # dpatches: (≥ q0 + ow, kh·kw·Cg); plane: (Hp, Wp, Cg) padded channels-last gradient, added to
    # plane[oy·sh + i·dh, x·sw + j·dw, c] += dpatches[q0 + x, (i·kw + j)·Cg + c]   (patch_rows' adjoint)
    Wp, Cg = plane.shape[1], plane.shape[2]
    flat = plane.ravel()
    run = uint64(kw * Cg) if dw == 1 else uint64(Cg)
    taps_per_row = 1 if dw == 1 else kw
    for ox in range(ow):
        src = dpatches[q0 + ox]
        for i in range(kh):
            for j in range(taps_per_row):
                first = uint64(((oy * sh + i * dh) * Wp + ox * sw + j * dw) * Cg)
                at = uint64((i * kw + j) * Cg)
                for k in range(run):
                    flat[first + k] += src[at + k]


@njit(**JIT)
def unpad_channels_last_add(plane, n, g, ph, pw, dx):
    # plane: (Hp, Wp, Cg) padded channels-last gradient; dx: (N, C, H, W), example n added to
    # dx[n, g·Cg + c, y, x] += plane[ph + y, pw + x, c]   (pad_channels_last's adjoint)
    H, W = dx.shape[2], dx.shape[3]
    Cg = plane.shape[2]
    for yy in range(H):
        inner = plane[ph + yy, pw:pw + W]
        for c in range(Cg):
            dst = dx[n, g * Cg + c, yy]
            for k in range(W):
                dst[k] += inner[k, c]


@njit(**JIT)
def patch_order_weight(W, groups, kh, kw, Cg, scratch_rows, wp):
    # W: dense-pattern weight operand, rows (O, Cg·kh·kw) in (c, i, j) order; wp: (O, kh·kw·Cg)
    # wp[o, (i·kw + j)·Cg + c] = W[o, (c·kh + i)·kw + j]: a patch row's order (channels last)
    O = wp.shape[0]
    Og = O // groups
    scratch = np.empty((scratch_rows, Cg * kh * kw), dtype=wp.dtype)
    for g in range(groups):
        wg = weight_rows(W, g * Og, (g + 1) * Og, scratch)
        for o in range(Og):
            for c in range(Cg):
                for ij in range(kh * kw):
                    wp[g * Og + o, ij * Cg + c] = wg[o, c * kh * kw + ij]


@njit(**JIT)
def pad_channels_last_chunk(t, x, groups, ph, pw, chunks, xp):
    # xp: (N, G, H + 2ph, W + 2pw, Cg); the (example, group) planes of chunk t written
    lo, hi = chunk_bounds(t, chunks, x.shape[0] * groups)
    for ng in range(lo, hi):
        pad_channels_last(x, ng // groups, ng % groups, ph, pw, xp[ng // groups, ng % groups])


@njit(**JIT_PARALLEL)
def pad_channels_last_batch(x, groups, ph, pw, chunks, xp):
    # ``pad_channels_last_chunk`` for every chunk, one per thread
    for t in prange(chunks):
        pad_channels_last_chunk(np.int64(t), x, groups, ph, pw, chunks, xp)


@njit(**JIT)
def conv2d_forward_patches_chunk(t, xp, wp, bias, kh, kw, sh, sw, dh, dw, groups, slab_rows,
                                 chunks, y):
    # xp: (N, G, Hp, Wp, Cg), the input zero-padded and channels last (pad_channels_last);
    # wp: (O, kh·kw·Cg), the weight in a patch row's order (patch_order_weight); bias: (O,)
    # y: (N, O, oh, ow), the output rows of chunk t's slabs written
    # y[n, o, y, x] = b[o] + Σ_k wp[o, k] · patches[(n, y, x), k]   per group, where a patch
    # row holds one receptive field channels last, (i, j, c).
    # Output rows of the whole batch, flattened (n, y), are cut into slabs of ``slab_rows``; a
    # slab's patches (P, K) stay in cache while BLAS forms (P, K) · wpᵀ → (P, O/G), written
    # transposed into y with the bias. BLAS runs faster with the output channels as its short
    # side and the patches read along K than as W · im2col (measured 1.2–1.5× on LeNet-5,
    # AlexNet and VGG layers). The slabs are split into ``chunks`` contiguous runs; this is run
    # t of them, BLAS single-threaded inside it.
    N, Cg = xp.shape[0], xp.shape[4]
    O, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    Og = O // groups
    K = Cg * kh * kw
    y3 = y.reshape((N, O, oh * ow))
    total = N * oh
    slabs = (total + slab_rows - 1) // slab_rows
    patches = np.empty((slab_rows * ow, K), dtype=y.dtype)
    out = np.empty((slab_rows * ow, Og), dtype=y.dtype)
    lo, hi = chunk_bounds(t, chunks, slabs)
    for s in range(lo, hi):
        r0 = s * slab_rows
        r1 = min(r0 + slab_rows, total)
        P = (r1 - r0) * ow
        for g in range(groups):
            for r in range(r0, r1):
                patch_rows(xp[r // oh, g], kh, kw, sh, sw, dh, dw, r % oh, ow, patches,
                           (r - r0) * ow)
            # np.bool_ flags and (C, A, A) layouts, as the im2col and linear kernels pass them:
            # every caller shares one compiled gemm (a compile costs about a second)
            gemm(patches[:P], wp[g * Og:(g + 1) * Og, :K], out[:P, :Og], np.bool_(False),
                 np.bool_(True), 1.0, 0.0)
            for r in range(r0, r1):
                n = r // oh
                p0 = (r % oh) * ow
                q0 = (r - r0) * ow
                for o in range(Og):
                    dst = y3[n, g * Og + o, p0:p0 + ow]
                    b = bias[g * Og + o]
                    col = out[q0:q0 + ow, o]
                    for k in range(uint64(ow)):  # unsigned: no wraparound tests (as im2col)
                        dst[k] = col[k] + b


@njit(**JIT_PARALLEL)
def conv2d_forward_patches(xp, wp, bias, kh, kw, sh, sw, dh, dw, groups, slab_rows, chunks, y):
    # ``conv2d_forward_patches_chunk`` for every chunk, one per thread
    for t in prange(chunks):
        conv2d_forward_patches_chunk(np.int64(t), xp, wp, bias, kh, kw, sh, sw, dh, dw, groups,
                                     slab_rows, chunks, y)


@njit(**JIT)
def conv2d_backward_patches_chunk(t, dy, xp, wp, kh, kw, sh, sw, dh, dw, groups, slab_rows,
                                  chunks, dw_block, need_input, need_weight, dxp, dweight_parts):
    # dy: (N, O, oh, ow); xp: (N or 0, G, Hp, Wp, Cg), the input padded channels last
    # (pad_channels_last), read only for the weight gradient; wp: (O or 0, kh·kw·Cg), the weight
    # in a patch row's order (patch_order_weight), read only for dx
    # dxp: (N or 0, G, Hp, Wp, Cg), the padded channels-last dx of chunk t's examples,
    # accumulated into (the caller zeroes it and unpads it: unpad_channels_last_add)
    # dweight_parts: (chunks, kh·kw·Cg, O), chunk t's partial sum of dWᵀ accumulated into,
    # rows in patch order (i, j, c)
    # dW'ᵀ_g += patchesᵀ · dy_g;   dpatches = dy_g · W'_g, dxp = col2im(dpatches)   (per group)
    # The forward's layout (``conv2d_forward_patches_chunk``): patches (P, K) channels last, dy
    # gathered into (P, O/G) per slab. Chunk t owns a run of whole examples, so that its col2im
    # writes touch only its own examples, and cuts their flattened output rows into slabs, which
    # may span examples (LeNet-5's 8 × 8 outputs are too few for one good product). Race-free;
    # the caller sums the partial weight gradients. BLAS forms the weight gradient fastest with
    # the summed dimension short: ``dw_block`` positions at a time (measured 1.5–2× at 64
    # positions against 256 or more on LeNet-5, AlexNet and VGG layers).
    N = dy.shape[0]
    O, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    Og = O // groups
    K = xp.shape[4] * kh * kw
    dy3 = dy.reshape((N, O, oh * ow))
    patches = np.empty((slab_rows * ow, K), dtype=dy.dtype)
    dyt = np.empty((slab_rows * ow, Og), dtype=dy.dtype)
    lo, hi = chunk_bounds(t, chunks, N)
    for r0 in range(lo * oh, hi * oh, slab_rows):
        r1 = min(r0 + slab_rows, hi * oh)
        P = (r1 - r0) * ow
        for g in range(groups):
            for r in range(r0, r1):  # dyt[q, o] = dy of slab position q, channel g·Og + o
                n = r // oh
                p0 = (r % oh) * ow
                q0 = (r - r0) * ow
                for o in range(Og):
                    src = dy3[n, g * Og + o, p0:p0 + ow]
                    for k in range(ow):
                        dyt[q0 + k, o] = src[k]
            if need_weight:
                for r in range(r0, r1):
                    patch_rows(xp[r // oh, g], kh, kw, sh, sw, dh, dw, r % oh, ow, patches,
                               (r - r0) * ow)
                for q in range(0, P, dw_block):
                    q1 = min(q + dw_block, P)
                    gemm(patches[q:q1], dyt[q:q1], dweight_parts[t, :, g * Og:(g + 1) * Og],
                         np.bool_(True), np.bool_(False), 1.0, 1.0)
            if need_input:
                gemm(dyt[:P], wp[g * Og:(g + 1) * Og], patches[:P], np.bool_(False),
                     np.bool_(False), 1.0, 0.0)
                for r in range(r0, r1):
                    patch_rows_add(patches, (r - r0) * ow, kh, kw, sh, sw, dh, dw, r % oh, ow,
                                   dxp[r // oh, g])


@njit(**JIT_PARALLEL)
def conv2d_backward_patches(dy, xp, wp, kh, kw, sh, sw, dh, dw, groups, slab_rows, chunks,
                            dw_block, need_input, need_weight, dxp, dweight_parts):
    # ``conv2d_backward_patches_chunk`` for every chunk, one per thread
    for t in prange(chunks):
        conv2d_backward_patches_chunk(np.int64(t), dy, xp, wp, kh, kw, sh, sw, dh, dw, groups,
                                      slab_rows, chunks, dw_block, need_input, need_weight, dxp,
                                      dweight_parts)


@njit(**JIT)
def unpad_channels_last_chunk(t, dxp, groups, ph, pw, chunks, dx):
    # dxp: (N, G, Hp, Wp, Cg); dx: (N, C, H, W), the (example, group) planes of chunk t added
    lo, hi = chunk_bounds(t, chunks, dx.shape[0] * groups)
    for ng in range(lo, hi):
        unpad_channels_last_add(dxp[ng // groups, ng % groups], ng // groups, ng % groups, ph,
                                pw, dx)


@njit(**JIT_PARALLEL)
def unpad_channels_last_batch(dxp, groups, ph, pw, chunks, dx):
    # ``unpad_channels_last_chunk`` for every chunk, one per thread
    for t in prange(chunks):
        unpad_channels_last_chunk(np.int64(t), dxp, groups, ph, pw, chunks, dx)


@njit(**JIT)
def conv2d_forward_im2col_chunk(t, x, W, bias, kh, kw, sh, sw, ph, pw, dh, dw, groups,
                                slab_rows, chunks, scratch_rows, y):
    # x: (N, C, H, W); W: dense-pattern weight operand, (O, C/G·kh·kw) rows; bias: (O,)
    # y: (N, O, oh, ow), the cells of chunk t written
    # y[n, o, :] = W[o] · cols_n + b[o] per group, cols_n = im2col of example n, built one slab of
    # ``slab_rows`` output rows at a time so that it stays in cache. The N·slabs tasks are split
    # into ``chunks`` contiguous runs; this is run t of them, BLAS single-threaded inside it.
    # ``weight_rows`` gives a group's rows: a view of a dense weight, or a codebook's rows
    # decoded into a scratch block of ``scratch_rows`` rows (never the whole weight).
    N, C = x.shape[0], x.shape[1]
    O, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    Og = O // groups
    K = C // groups * kh * kw
    y3 = y.reshape((N, O, oh * ow))
    slabs = (oh + slab_rows - 1) // slab_rows
    pointwise = _is_pointwise(kh, kw, sh, sw, ph, pw)
    cols = np.empty((0 if pointwise else C * kh * kw, slab_rows * ow), dtype=x.dtype)
    scratch = np.empty((scratch_rows, K), dtype=x.dtype)
    lo, hi = chunk_bounds(t, chunks, N * slabs)
    for task in range(lo, hi):
        n = task // slabs
        oy0 = (task % slabs) * slab_rows
        oy1 = min(oy0 + slab_rows, oh)
        p0, p1 = oy0 * ow, oy1 * ow
        src = _slab_columns(x, n, kh, kw, sh, sw, ph, pw, dh, dw, ow, oy0, oy1, cols, pointwise)
        for g in range(groups):
            wg = weight_rows(W, g * Og, (g + 1) * Og, scratch)
            # np.bool_: runtime flags, not literals, so conv and linear share one compiled gemm
            gemm(wg, src[g * K:(g + 1) * K], y3[n, g * Og:(g + 1) * Og, p0:p1], np.bool_(False),
                 np.bool_(False), 1.0, 0.0)
        # A row and unsigned indices: the signed y3[n, o, p] kept this loop scalar, a quarter
        # of LeNet-5's conv1 time
        for o in range(O):
            b = bias[o]
            row = y3[n, o]
            for p in range(uint64(p0), uint64(p1)):
                row[p] += b


@njit(**JIT_PARALLEL)
def conv2d_forward_im2col(x, W, bias, kh, kw, sh, sw, ph, pw, dh, dw, groups, slab_rows, chunks,
                          scratch_rows, y):
    # ``conv2d_forward_im2col_chunk`` for every chunk, one per thread
    for t in prange(chunks):
        conv2d_forward_im2col_chunk(np.int64(t), x, W, bias, kh, kw, sh, sw, ph, pw, dh, dw,
                                    groups, slab_rows, chunks, scratch_rows, y)


@njit(**JIT)
def conv2d_backward_im2col_chunk(t, dy, x, W, kh, kw, sh, sw, ph, pw, dh, dw, groups, slab_rows,
                                 chunks, scratch_rows, need_input, need_weight, dx,
                                 dweight_parts):
    # dy: (N, O, oh, ow); x: (N, C, H, W), read only for the weight gradient; W: dense-pattern
    # weight operand; dx: (N, C, H, W), chunk t's examples accumulated into (the caller zeroes it)
    # dweight_parts: (chunks, O, C/G·kh·kw), chunk t's partial sum accumulated into
    # dW[o] = Σ_n dy_n[o] · cols_nᵀ;   dx_n = col2im(Wᵀ · dy_n)   (per group)
    # Chunk t owns a run of whole examples (so its col2im writes touch only its own dx[n]) and
    # its own weight-gradient slice: race-free; the caller sums the partial weight gradients.
    N, C, H, Wd = dx.shape
    O, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    Og = O // groups
    K = C // groups * kh * kw
    dy3 = dy.reshape((N, O, oh * ow))
    slabs = (oh + slab_rows - 1) // slab_rows
    pointwise = _is_pointwise(kh, kw, sh, sw, ph, pw)
    cols = np.empty((0 if pointwise else C * kh * kw, slab_rows * ow), dtype=dy.dtype)
    scratch = np.empty((scratch_rows, K), dtype=dy.dtype)
    lo, hi = chunk_bounds(t, chunks, N)
    for n in range(lo, hi):
        for s in range(slabs):
            oy0 = s * slab_rows
            oy1 = min(oy0 + slab_rows, oh)
            p0, p1 = oy0 * ow, oy1 * ow
            if need_weight:
                src = _slab_columns(x, n, kh, kw, sh, sw, ph, pw, dh, dw, ow, oy0, oy1, cols,
                                    pointwise)
                for g in range(groups):
                    gemm(dy3[n, g * Og:(g + 1) * Og, p0:p1], src[g * K:(g + 1) * K],
                         dweight_parts[t, g * Og:(g + 1) * Og], np.bool_(False),
                         np.bool_(True), 1.0, 1.0)
            if need_input:
                if pointwise:
                    dst = dx[n].reshape((C, H * Wd))[:, p0:p1]
                else:
                    dst = cols[:, :p1 - p0]
                for g in range(groups):
                    wg = weight_rows(W, g * Og, (g + 1) * Og, scratch)
                    gemm(wg, dy3[n, g * Og:(g + 1) * Og, p0:p1], dst[g * K:(g + 1) * K],
                         np.bool_(True), np.bool_(False), 1.0, 0.0)
                if not pointwise:
                    col2im_rows(cols, n, kh, kw, sh, sw, ph, pw, dh, dw, ow, oy0, oy1, dx)


@njit(**JIT_PARALLEL)
def conv2d_backward_im2col(dy, x, W, kh, kw, sh, sw, ph, pw, dh, dw, groups, slab_rows, chunks,
                           scratch_rows, need_input, need_weight, dx, dweight_parts):
    # ``conv2d_backward_im2col_chunk`` for every chunk, one per thread
    for t in prange(chunks):
        conv2d_backward_im2col_chunk(np.int64(t), dy, x, W, kh, kw, sh, sw, ph, pw, dh, dw,
                                     groups, slab_rows, chunks, scratch_rows, need_input,
                                     need_weight, dx, dweight_parts)


@njit(**JIT_PARALLEL)
def conv2d_forward_sparse(x, W, bias, kh, kw, sh, sw, ph, pw, dh, dw, groups, row_chunks,
                          chunks, max_row, y):
    # x: (N, C, H, W); W: sparse weight operand (rows O over C/G·kh·kw columns, via
    # row_entries); bias: (O,); y: (N, O, oh, ow), every cell written
    # y[n, o, :] = b[o] + Σ_{(k, v) ∈ row o} v · cols_n[g·K + k]
    # A task is (example, block of output rows): it builds the example's whole im2col once
    # (reused by the next task of the same example) and decodes each of its rows once for the
    # full image, so row decoding (a codebook's or Huffman's) costs once per example, and the
    # products run over whole output planes. Blocks of rows let a small batch use every thread.
    N, C, H, Wd = x.shape
    O, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    Og = O // groups
    K = C // groups * kh * kw
    y3 = y.reshape((N, O, oh * ow))
    pointwise = _is_pointwise(kh, kw, sh, sw, ph, pw)
    for t in prange(chunks):
        buf = np.empty(C * kh * kw * oh * ow, dtype=x.dtype)
        ecols = np.empty(max_row, dtype=np.int64)
        evals = np.empty(max_row, dtype=x.dtype)
        eslots = np.empty(0, dtype=np.int64)
        lo, hi = chunk_bounds(t, chunks, N * row_chunks)
        built = -1
        src = buf[:0].reshape((0, 0))
        for task in range(lo, hi):
            n = task // row_chunks
            if n != built:
                src = _slab_columns_contiguous(x, n, kh, kw, sh, sw, ph, pw, dh, dw, ow, 0, oh,
                                               buf, pointwise)
                built = n
            o_lo, o_hi = chunk_bounds(task % row_chunks, row_chunks, O)
            for o in range(o_lo, o_hi):
                g = o // Og
                out = y3[n, o]
                out[:] = bias[o]
                cols_o, vals_o, slots_o, count = row_entries(W, o, ecols, evals, eslots, False)
                sparse_row_product(out, src[g * K:(g + 1) * K], cols_o, vals_o, count)


@njit(**JIT_PARALLEL)
def conv2d_backward_sparse(dy, x, W, kh, kw, sh, sw, ph, pw, dh, dw, groups, chunks, max_row,
                           need_input, need_weight, dx, dvalue_parts):
    # dy: (N, O, oh, ow); x: (N, C, H, W), read only for the weight gradient; W: sparse operand
    # dx: (N, C, H, W), accumulated into; dvalue_parts: (chunks, number of stored values)
    # dvalues[slot(o, k)] += dy_n[o] · cols_n[g·K + k]      (only where a weight is stored)
    # dcols_n[g·K + k] += v · dy_n[o];  dx_n = col2im(dcols_n)
    # Chunks own whole examples (col2im writes only their dx[n]) and their own gradient slice;
    # each example's im2col is built once and each row decoded once for both products.
    N, C, H, Wd = dx.shape
    O, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    Og = O // groups
    K = C // groups * kh * kw
    P = oh * ow
    dy3 = dy.reshape((N, O, P))
    pointwise = _is_pointwise(kh, kw, sh, sw, ph, pw)
    for t in prange(chunks):
        buf = np.empty(C * kh * kw * P if need_weight else 0, dtype=dy.dtype)
        dbuf = np.empty(C * kh * kw * P if need_input else 0, dtype=dy.dtype)
        ecols = np.empty(max_row, dtype=np.int64)
        evals = np.empty(max_row, dtype=dy.dtype)
        eslots = np.empty(max_row, dtype=np.int64)
        lo, hi = chunk_bounds(t, chunks, N)
        for n in range(lo, hi):
            src = buf[:0].reshape((0, 0))
            if need_weight:
                src = _slab_columns_contiguous(x, n, kh, kw, sh, sw, ph, pw, dh, dw, ow, 0, oh,
                                               buf, pointwise)
            d = dbuf.reshape((C * kh * kw if need_input else 0, P))
            if need_input:
                d[:, :] = 0
            for o in range(O):
                g = o // Og
                g_out = dy3[n, o]
                cols_o, vals_o, slots_o, count = row_entries(W, o, ecols, evals, eslots,
                                                             need_weight)
                for e in range(count):
                    k = g * K + cols_o[e]
                    if need_weight:
                        dvalue_parts[t, slots_o[e]] += dot(g_out, src[k])
                    if need_input:
                        axpy(d[k], vals_o[e], g_out)
            if need_input:
                if pointwise:
                    dx[n].reshape((C, H * Wd))[:, :] += d
                else:
                    col2im_rows(d, n, kh, kw, sh, sw, ph, pw, dh, dw, ow, 0, oh, dx)


@njit(**JIT)
def _column_ranges(kw, sw, pw, dw, W, ow):
    """For each kernel column j: the valid outputs [lo, hi) and the input offset j·dw − pw."""
    ranges = np.empty((kw, 3), dtype=np.int64)
    for j in range(kw):
        lo, hi = _valid_range(j * dw - pw, sw, W, ow)
        ranges[j, 0] = lo
        ranges[j, 1] = hi
        ranges[j, 2] = j * dw - pw
    return ranges


@njit(**JIT_PARALLEL)
def depthwise_conv2d_forward(x, weight, bias, sh, sw, ph, pw, dh, dw, y):
    # x: (N, C, H, W); weight: (O, 1, kh, kw) with O = m·C; bias: (O,); y: (N, O, oh, ow), every cell written
    # y[n, o, y, x] = b[o] + Σ_ij W[o, 0, i, j] · x[n, o // m, y·sh − ph + i·dh, x·sw − pw + j·dw]
    # One output row at a time, so that it stays in L1 while the kh·kw taps add into it.
    N, C, H, W = x.shape
    O, _, kh, kw = weight.shape
    oh, ow = y.shape[2], y.shape[3]
    m = O // C
    cr = _column_ranges(kw, sw, pw, dw, W, ow)
    for no in prange(N * O):
        n = no // O
        o = no % O
        c = o // m
        for oy in range(oh):
            row = y[n, o, oy]
            row[:] = bias[o]
            for i in range(kh):
                iy = oy * sh - ph + i * dh
                if iy < 0 or iy >= H:
                    continue
                src = x[n, c, iy]
                for j in range(kw):
                    w = weight[o, 0, i, j]
                    lo, count = cr[j, 0], cr[j, 1] - cr[j, 0]
                    first = lo * sw + cr[j, 2]
                    if sw == 1:
                        axpy(row[lo:lo + count], w, src[first:first + count])
                    else:
                        axpy(row[lo:lo + count], w, taps(src, first, count, sw))


@njit(**JIT)
def _row_3x3(out, bias, r0, r1, r2, w):
    # out: (L,); r0, r1, r2: (≥ L + 2,) padded input rows; w: (3, 3)
    # out[k] = bias + Σ_ij w[i, j] · r_i[k + j]: nine taps, one pass, one store per output
    w00, w01, w02 = w[0, 0], w[0, 1], w[0, 2]
    w10, w11, w12 = w[1, 0], w[1, 1], w[1, 2]
    w20, w21, w22 = w[2, 0], w[2, 1], w[2, 2]
    for k in range(out.shape[0]):
        out[k] = (bias + w00 * r0[k] + w01 * r0[k + 1] + w02 * r0[k + 2]
                  + w10 * r1[k] + w11 * r1[k + 1] + w12 * r1[k + 2]
                  + w20 * r2[k] + w21 * r2[k + 1] + w22 * r2[k + 2])


@njit(**JIT_PARALLEL)
def depthwise_conv2d_forward_3x3(x, weight, bias, ph, pw, y):
    # x: (N, C, H, W); weight: (O, 1, 3, 3) with O = m·C; bias: (O,); y: (N, O, oh, ow), every
    # cell written; stride 1, dilation 1 (MobileNet's common case)
    # y[n, o, y, x] = b[o] + Σ_ij W[o, 0, i, j] · xpad[n, o // m, y + i, x + j]
    # Each input plane is zero-padded once into a small buffer, so that every output row is a
    # single pass with no edge cases (the general kernel makes nine passes per row).
    N, C, H, W = x.shape
    O = weight.shape[0]
    oh, ow = y.shape[2], y.shape[3]
    m = O // C
    for no in prange(N * O):
        n = no // O
        o = no % O
        c = o // m
        padded = np.zeros((H + 2 * ph, W + 2 * pw), dtype=x.dtype)
        padded[ph:ph + H, pw:pw + W] = x[n, c]
        for oy in range(oh):
            _row_3x3(y[n, o, oy], bias[o], padded[oy], padded[oy + 1], padded[oy + 2],
                     weight[o, 0])


@njit(**JIT_PARALLEL)
def depthwise_conv2d_backward_input(dy, weight, sh, sw, ph, pw, dh, dw, dx):
    # dy: (N, O, oh, ow); weight: (O, 1, kh, kw) with O = m·C; dx: (N, C, H, W), accumulated into
    # dx[n, c, y·sh − ph + i·dh, x·sw − pw + j·dw] += Σ_{o of c} W[o, 0, i, j] · dy[n, o, y, x]
    N, C, H, W = dx.shape
    O, _, kh, kw = weight.shape
    oh, ow = dy.shape[2], dy.shape[3]
    m = O // C
    cr = _column_ranges(kw, sw, pw, dw, W, ow)
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for o in range(c * m, (c + 1) * m):
            for oy in range(oh):
                g = dy[n, o, oy]
                for i in range(kh):
                    iy = oy * sh - ph + i * dh
                    if iy < 0 or iy >= H:
                        continue
                    dst = dx[n, c, iy]
                    for j in range(kw):
                        w = weight[o, 0, i, j]
                        lo, count = cr[j, 0], cr[j, 1] - cr[j, 0]
                        first = lo * sw + cr[j, 2]
                        if sw == 1:
                            axpy(dst[first:first + count], w, g[lo:lo + count])
                        else:
                            axpy(taps(dst, first, count, sw), w, g[lo:lo + count])


@njit(**JIT_PARALLEL)
def depthwise_conv2d_backward_weight(dy, x, sh, sw, ph, pw, dh, dw, dweight):
    # dy: (N, O, oh, ow); x: (N, C, H, W); dweight: (O, 1, kh, kw), accumulated into
    # dW[o, 0, i, j] += Σ_{n, y, x} dy[n, o, y, x] · x[n, o // m, y·sh − ph + i·dh, x·sw − pw + j·dw]
    # One output channel per iteration (race-free). Sums run in per-column lanes, summed at the
    # end: a scalar float accumulator would not vectorise without fastmath's reassociation.
    N, C, H, W = x.shape
    O, _, kh, kw = dweight.shape
    oh, ow = dy.shape[2], dy.shape[3]
    m = O // C
    cr = _column_ranges(kw, sw, pw, dw, W, ow)
    for o in prange(O):
        c = o // m
        lanes = np.zeros((kh, kw, ow), dtype=dweight.dtype)
        for n in range(N):
            for oy in range(oh):
                g = dy[n, o, oy]
                for i in range(kh):
                    iy = oy * sh - ph + i * dh
                    if iy < 0 or iy >= H:
                        continue
                    src = x[n, c, iy]
                    for j in range(kw):
                        lo, count = cr[j, 0], cr[j, 1] - cr[j, 0]
                        first = lo * sw + cr[j, 2]
                        if sw == 1:
                            multiply_add(lanes[i, j, lo:lo + count], g[lo:lo + count],
                                          src[first:first + count])
                        else:
                            multiply_add(lanes[i, j, lo:lo + count], g[lo:lo + count],
                                          taps(src, first, count, sw))
        for i in range(kh):
            for j in range(kw):
                dweight[o, 0, i, j] += lanes[i, j].sum()


# ---------------------------------------------------------------------------------------------
# Geometry: every size the kernels need, checked once


@dataclass(frozen=True)
class ConvGeometry:
    """Shapes of one convolution; ``in_shape`` and ``out_shape`` are per example, (C, H, W)."""

    channels: int
    height: int
    width: int
    out_channels: int
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    out_height: int
    out_width: int

    @property
    def in_shape(self):
        return (self.channels, self.height, self.width)

    @property
    def out_shape(self):
        return (self.out_channels, self.out_height, self.out_width)

    @property
    def weight_shape(self):
        return (self.out_channels, self.channels // self.groups) + self.kernel

    @property
    def depthwise(self):
        """One input channel per group: the direct kernels beat a GEMM with a 1-row operand."""
        return self.groups == self.channels and self.groups > 1

    def flops(self, batch):
        """Multiply-adds × 2 of the forward pass."""
        kh, kw = self.kernel
        per_output = 2 * (self.channels // self.groups) * kh * kw
        return batch * self.out_channels * self.out_height * self.out_width * per_output

    def kernel_args(self):
        """(sh, sw, ph, pw, dh, dw) in the kernels' argument order."""
        return self.stride + self.padding + self.dilation


def conv_output_size(size, kernel, stride, padding, dilation):
    """⌊(size + 2·padding − dilation·(kernel − 1) − 1) / stride⌋ + 1 (Caffe and torch agree)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv2d_geometry(in_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1, *,
                    at="conv2d"):
    """Check a convolution's arguments against an input (C, H, W) and a weight shape."""
    stride = pair(stride, "stride", at, minimum=1)
    padding = pair(padding, "padding", at, minimum=0)
    dilation = pair(dilation, "dilation", at, minimum=1)
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{at}: groups must be a positive integer, got {groups!r}")
    groups = int(groups)
    if len(in_shape) != 3:
        raise ValueError(f"{at}: input must be (N, C, H, W), got per-example shape {tuple(in_shape)}")
    if len(weight_shape) != 4:
        raise ValueError(f"{at}: weight must be (O, C/groups, kh, kw), got shape {tuple(weight_shape)}")
    C, H, W = (int(s) for s in in_shape)
    O, Cg, kh, kw = (int(s) for s in weight_shape)
    if min(O, Cg, kh, kw) < 1:
        raise ValueError(f"{at}: weight shape {tuple(weight_shape)} has an empty axis")
    if C % groups or O % groups:
        raise ValueError(
            f"{at}: groups={groups} must divide both input channels {C} and output channels {O}")
    if Cg != C // groups:
        raise ValueError(
            f"{at}: weight shape {tuple(weight_shape)} does not match input channels {C} "
            f"(expected {C // groups} per group with groups={groups})")
    oh = conv_output_size(H, kh, stride[0], padding[0], dilation[0])
    ow = conv_output_size(W, kw, stride[1], padding[1], dilation[1])
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{at}: kernel {kh}x{kw} (dilation {dilation}) does not fit the input {H}x{W} "
            f"padded by {padding}")
    check_gemm_sizes(C * kh * kw, oh * ow, H * W, O, at=at)
    return ConvGeometry(C, H, W, O, (kh, kw), stride, padding, dilation, groups, oh, ow)


# ---------------------------------------------------------------------------------------------
# Dense-weight convolution on checked arguments (what the Net calls)


# Bytes of im2col columns a thread builds at a time: a slab stays in its core's L2 cache while
# the GEMM reads it. A sweep from 512 KiB to 64 MiB over bench.py's AlexNet and VGG cases found
# 2 MiB best or within noise on a 2-core machine with 2 MiB of L2 per core.
SLAB_BYTES = 2 << 20


# Output positions per weight-gradient product in the backward (see ``conv2d_backward_patches``):
# at least DW_BLOCK, and as many as give DW_BLOCK_BYTES of patches, so that layers with short
# patch rows (LeNet-5's conv1: 25 values) do not pay a BLAS call per few thousand multiply-adds.
DW_BLOCK = 64
DW_BLOCK_BYTES = 128 << 10


def _dw_block(geom, itemsize):
    kh, kw = geom.kernel
    return max(DW_BLOCK, DW_BLOCK_BYTES // (geom.channels // geom.groups * kh * kw * itemsize))


def _slab_rows(geom, itemsize, rows_wanted):
    """Output rows per slab: the patches of ``rows_wanted`` rows, at most ``SLAB_BYTES``."""
    kh, kw = geom.kernel
    row_bytes = geom.channels // geom.groups * kh * kw * geom.out_width * itemsize
    return max(1, min(rows_wanted, SLAB_BYTES // max(row_bytes, 1)))


def _forward_launch(geom, N, itemsize):
    """(slab rows, chunks) for ``conv2d_forward_patches``: slabs of the batch's flattened output
    rows, at least one per thread when there are rows enough, one run of slabs per thread, and
    one chunk in all for a small call (``work_chunks``)."""
    total = N * geom.out_height
    threads = numba.get_num_threads()
    rows = _slab_rows(geom, itemsize, -(-total // threads))
    return rows, work_chunks(-(-total // rows), geom.flops(N) // 2)


def _backward_launch(geom, N, itemsize):
    """(slab rows, chunks) for ``conv2d_backward_patches``: chunks own whole examples."""
    return _slab_rows(geom, itemsize, N * geom.out_height), min(numba.get_num_threads(), N)


def _im2col_launch(geom, N, itemsize):
    """(slab rows, forward chunks, backward chunks) for the im2col kernels: slabs of one
    example's output rows whose columns (all groups) fill ``SLAB_BYTES``; the forward splits
    examples × slabs, the backward examples."""
    kh, kw = geom.kernel
    row_bytes = geom.channels * kh * kw * geom.out_width * itemsize
    rows = max(1, min(geom.out_height, SLAB_BYTES // max(row_bytes, 1)))
    tasks = N * -(-geom.out_height // rows)
    return rows, work_chunks(tasks, geom.flops(N) // 2), min(numba.get_num_threads(), N)


# Input channels per group from which the dense-pattern kernels work channels last (patches);
# below, im2col: a patch row of LeNet-5's conv1 (one channel) is five runs of five values, and
# its backward ran 2× slower channels last than in im2col's (C·kh·kw, positions) layout.
CHANNELS_LAST_MIN = 8


def _channels_last(geom):
    return geom.channels // geom.groups >= CHANNELS_LAST_MIN


def _forward_gemm(x, W, bias, geom, scratch_rows, y):
    """y = conv(x, W) + b for a dense-pattern weight operand (dense or codebook rows)."""
    N, C, H, Wd = x.shape
    kh, kw = geom.kernel
    sh, sw, ph, pw, dh, dw = geom.kernel_args()
    G = geom.groups
    if not _channels_last(geom):
        rows, chunks, _ = _im2col_launch(geom, N, x.itemsize)
        run_chunks(conv2d_forward_im2col, conv2d_forward_im2col_chunk, chunks, x, W, bias, kh, kw,
                   sh, sw, ph, pw, dh, dw, G, rows, chunks, scratch_rows, y)
        return
    rows, chunks = _forward_launch(geom, N, x.itemsize)
    # 1. each (example, group) copied once, zero-padded and channels last; 2. the weight
    # reordered to a patch row's order (a codebook decodes a group's rows into scratch); 3. the
    # slabs of the batch's output rows
    xp = np.empty((N, G, H + 2 * ph, Wd + 2 * pw, C // G), dtype=x.dtype)
    pad_chunks = min(chunks, N * G)
    run_chunks(pad_channels_last_batch, pad_channels_last_chunk, pad_chunks, x, G, ph, pw,
               pad_chunks, xp)
    wp = _patch_order(W, geom, scratch_rows, x.dtype)
    run_chunks(conv2d_forward_patches, conv2d_forward_patches_chunk, chunks, xp, wp, bias, kh, kw,
               sh, sw, dh, dw, G, rows, chunks, y)


def _patch_order(W, geom, scratch_rows, dtype):
    """The weight operand's rows in a patch row's order, (O, kh·kw·C/G) (``patch_order_weight``);
    NumPy reorders a dense weight (one kernel fewer to compile)."""
    O, Cg, kh, kw = geom.weight_shape
    if isinstance(W, DenseArrays):
        return np.ascontiguousarray(W.w2.reshape(O, Cg, kh * kw).transpose(0, 2, 1)).reshape(O, -1)
    wp = np.empty((O, kh * kw * Cg), dtype=dtype)
    patch_order_weight(W, geom.groups, kh, kw, Cg, scratch_rows, wp)
    return wp


def _bias_and_output(x, bias, geom):
    """The bias (zeros if None) and an empty output (N, O, OH, OW) for the kernels."""
    if bias is None:
        bias = np.zeros(geom.out_channels, dtype=x.dtype)
    return bias, np.empty((x.shape[0],) + geom.out_shape, dtype=x.dtype)


def conv2d_forward_dense(x, weight, bias, geom):
    """y = conv(x, W) + b for arguments already checked against ``geom``; ``bias`` may be None."""
    N = x.shape[0]
    bias, y = _bias_and_output(x, bias, geom)
    if N == 0:
        return y
    if geom.depthwise:
        if geom.kernel == (3, 3) and geom.stride == (1, 1) and geom.dilation == (1, 1):
            depthwise_conv2d_forward_3x3(x, weight, bias, *geom.padding, y)
        else:
            depthwise_conv2d_forward(x, weight, bias, *geom.kernel_args(), y)
        return y
    _forward_gemm(x, DenseArrays(weight.reshape(geom.out_channels, -1)), bias, geom, 0, y)
    return y


def conv2d_backward_dense(dy, x, weight, geom, *, need_input=True, need_weight=True):
    """Gradients of a convolution for checked arguments → (dx, dweight, dbias).

        dx    = col2im(Wᵀ · dy)           (per group and example)
        dW    = Σ_n dy_n · cols_nᵀ         (per group)
        db[o] = Σ_{n, y, x} dy[n, o, y, x]

    Entries not asked for are None; ``x`` may be None when only dx is wanted.
    """
    N = dy.shape[0]
    dx = np.zeros((N,) + geom.in_shape, dtype=dy.dtype) if need_input else None
    dweight = np.zeros(geom.weight_shape, dtype=dy.dtype) if need_weight else None
    dbias = dy.sum(axis=(0, 2, 3)) if need_weight else None
    if N == 0 or not (need_input or need_weight):
        return dx, dweight, dbias
    args = geom.kernel_args()
    if geom.depthwise:
        if need_input:
            depthwise_conv2d_backward_input(dy, weight, *args, dx)
        if need_weight:
            depthwise_conv2d_backward_weight(dy, x, *args, dweight)
        return dx, dweight, dbias
    W = DenseArrays(weight.reshape(geom.out_channels, -1))
    dW = _backward_blocked(dy, x, W, geom, 0, need_input, need_weight, dx)
    if need_weight:
        dweight[...] = dW
    return dx, dweight, dbias


def _backward_blocked(dy, x, W, geom, scratch_rows, need_input, need_weight, dx):
    """The dense-pattern backward (dx accumulated into ``dx``) → dW (O, C/G, kh, kw) or None."""
    N = dy.shape[0]
    O, Cg, kh, kw = geom.weight_shape
    x = x if need_weight else _NO_INPUT(dy.dtype)
    dx = dx if need_input else np.empty((N,) + geom.in_shape, dtype=dy.dtype)
    G = geom.groups
    sh, sw, ph, pw, dh, dw = geom.kernel_args()
    if _channels_last(geom):
        rows, chunks = _backward_launch(geom, N, dy.itemsize)
        # 1. the input padded channels last (for dW) and the weight in patch order (for dx), as
        # the forward makes them; 2. the chunks' products into a padded channels-last dx and
        # partial dWᵀ; 3. that dx unpadded into ``dx``
        H, Wd = geom.in_shape[1:]
        plane = (G, H + 2 * ph, Wd + 2 * pw, Cg)
        xp = np.empty((N if need_weight else 0,) + plane, dtype=dy.dtype)
        pad_chunks = min(chunks, N * G)
        if need_weight:
            run_chunks(pad_channels_last_batch, pad_channels_last_chunk, pad_chunks, x, G, ph, pw,
                       pad_chunks, xp)
        wp = (_patch_order(W, geom, scratch_rows, dy.dtype) if need_input
              else np.empty((0, kh * kw * Cg), dtype=dy.dtype))
        dxp = np.zeros((N if need_input else 0,) + plane, dtype=dy.dtype)
        parts = np.zeros((chunks, kh * kw * Cg, O) if need_weight else (chunks, 0, 0),
                         dtype=dy.dtype)
        run_chunks(conv2d_backward_patches, conv2d_backward_patches_chunk, chunks, dy, xp, wp, kh,
                   kw, sh, sw, dh, dw, G, rows, chunks, _dw_block(geom, dy.itemsize), need_input,
                   need_weight, dxp, parts)
        if need_input:
            run_chunks(unpad_channels_last_batch, unpad_channels_last_chunk, pad_chunks, dxp, G,
                       ph, pw, pad_chunks, dx)
        if not need_weight:
            return None
        # the kernel's patch order (i, j, c) back to the weight's (c, i, j)
        dW = parts.sum(axis=0).T.reshape(O, kh, kw, Cg).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(dW)
    rows, _, chunks = _im2col_launch(geom, N, dy.itemsize)
    parts = np.zeros((chunks, O, Cg * kh * kw) if need_weight else (chunks, 0, 0),
                     dtype=dy.dtype)
    run_chunks(conv2d_backward_im2col, conv2d_backward_im2col_chunk, chunks, dy, x, W, kh, kw, sh,
               sw, ph, pw, dh, dw, G, rows, chunks, scratch_rows, need_input, need_weight, dx,
               parts)
    return parts.sum(axis=0).reshape(geom.weight_shape) if need_weight else None


def _NO_INPUT(dtype):
    return np.empty((0,) * 4, dtype=dtype)


def _same_dtype(x, fmt):
    # BLAS is chosen by the output's dtype: a weight of another dtype would be read as garbage.
    if fmt.dtype != x.dtype:
        raise TypeError(f"a {fmt.dtype} {fmt.kind} weight cannot take a {x.dtype} input; "
                        f"convert one of them (WeightFormat.astype)")


def conv2d_forward_format(x, fmt, bias, geom):
    """y = conv(x, W) + b with W in any weight format (``robustcnn.engine.formats``).

    Dense-pattern formats run the slab GEMM (a codebook decodes a group's rows per slab into a
    scratch block); sparse formats run an SpMM of each decoded row over the example's im2col.
    A depthwise layer's weight is tiny (O·kh·kw values), so it is decoded for the direct
    depthwise kernels.
    """
    _same_dtype(x, fmt)
    if fmt.dense_view or geom.depthwise:
        weight = fmt.weight if fmt.dense_view else fmt.to_dense()
        return conv2d_forward_dense(x, weight, bias, geom)
    y = quantized.conv2d_forward(x, fmt, bias, geom)  # the format's integer kernel, if it applies
    if y is not None:
        return y
    N = x.shape[0]
    bias, y = _bias_and_output(x, bias, geom)
    if N == 0:
        return y
    if fmt.sparse:
        threads = numba.get_num_threads()
        row_chunks = min(-(-threads // N), geom.out_channels)  # rows split only for small batches
        chunks = min(threads, N * row_chunks)
        conv2d_forward_sparse(x, fmt.operand(), bias, *geom.kernel, *geom.kernel_args(),
                              geom.groups, row_chunks, chunks, max(fmt.max_row_entries(), 1), y)
    else:
        _forward_gemm(x, fmt.operand(), bias, geom, geom.out_channels // geom.groups, y)
    return y


# Stored share of a sparse weight above which its gradient comes from one dense GEMM (measured on
# LeNet-5's conv1 and conv2 at batch 64: the two cost the same at 3–6 % stored).
SPARSE_DW_DENSITY = 0.05


def conv2d_backward_format(dy, x, fmt, geom, *, need_input=True, need_weight=True):
    """Gradients with W in any format → (dx, {trainable array name: gradient}, dbias).

    The weight gradient is the format's own: dense dW; CSR's values at stored positions only
    (pruned weights stay exactly zero); a codebook's per-centroid sums (Deep Compression eq. 3).
    """
    _same_dtype(dy, fmt)
    if fmt.dense_view or geom.depthwise:
        weight = fmt.weight if fmt.dense_view else fmt.to_dense()
        dx, dweight, dbias = conv2d_backward_dense(dy, x, weight, geom, need_input=need_input,
                                                   need_weight=need_weight)
        return dx, (fmt.reduce_dense_grad(dweight) if need_weight else None), dbias
    N = dy.shape[0]
    dx = np.zeros((N,) + geom.in_shape, dtype=dy.dtype) if need_input else None
    dbias = dy.sum(axis=(0, 2, 3)) if need_weight else None
    grads = None
    if fmt.sparse:
        # dW = Σ_n dy_n · cols_nᵀ does not involve W: above SPARSE_DW_DENSITY one GEMM over
        # every position, gathered at the stored ones, is faster than a dot per stored weight.
        gemm_dw = need_weight and N and fmt.stored_entries() >= SPARSE_DW_DENSITY * fmt.size
        sparse_dw = need_weight and not gemm_dw
        chunks = min(numba.get_num_threads(), max(N, 1))
        values = fmt.arrays()[fmt.trainable[0]]
        parts = np.zeros((chunks, values.size if sparse_dw else 0), dtype=dy.dtype)
        if N and (need_input or sparse_dw):
            conv2d_backward_sparse(
                dy, x if sparse_dw else _NO_INPUT(dy.dtype), fmt.operand(), *geom.kernel,
                *geom.kernel_args(), geom.groups, chunks, max(fmt.max_row_entries(), 1),
                need_input, sparse_dw,
                dx if need_input else np.empty((N,) + geom.in_shape, dtype=dy.dtype), parts)
        if gemm_dw:
            W = DenseArrays(np.zeros((geom.out_channels, 0), dtype=dy.dtype))  # not read
            grads = fmt.reduce_dense_grad(_backward_blocked(dy, x, W, geom, 0, False, True, None))
        elif need_weight:
            grads = fmt.slot_grads(parts.sum(axis=0))
    else:
        dweight = None
        if N and (need_input or need_weight):
            dweight = _backward_blocked(dy, x, fmt.operand(), geom,
                                        geom.out_channels // geom.groups, need_input, need_weight,
                                        dx if need_input else None)
        if need_weight:
            if dweight is None:
                dweight = np.zeros(geom.weight_shape, dy.dtype)
            grads = fmt.reduce_dense_grad(dweight)
    return dx, grads, dbias


# ---------------------------------------------------------------------------------------------
# Functional API: checked arguments, then the kernels


def _check(x, weight, bias, stride, padding, dilation, groups, at):
    x = float_array(x, "input", at, ndim=4)
    weight = float_array(weight, "weight", at, ndim=4, dtype=x.dtype, finite=False)
    geom = conv2d_geometry(x.shape[1:], weight.shape, stride, padding, dilation, groups, at=at)
    if bias is not None:
        bias = float_array(bias, "bias", at, ndim=1, dtype=x.dtype, finite=False)
        if bias.shape[0] != geom.out_channels:
            raise ValueError(
                f"{at}: bias shape {bias.shape} does not match output channels {geom.out_channels}")
    return x, weight, bias, geom


def conv2d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
                   name="conv2d_forward"):
    """2-D convolution (cross-correlation) of ``x`` (N, C, H, W) with ``weight`` (O, C/groups, kh, kw).

    ``bias`` is (O,) or None; ``stride``, ``padding`` and ``dilation`` are ints or (h, w) pairs;
    ``groups`` splits the channels (groups == C with one weight channel is depthwise).
    Returns y (N, O, OH, OW) in the input's dtype (float32 or float64). Raises ValueError or
    TypeError naming ``name`` for bad shapes, dtypes or non-finite values.
    """
    at = where(name, "Convolution")
    x, weight, bias, geom = _check(x, weight, bias, stride, padding, dilation, groups, at)
    y = conv2d_forward_dense(x, weight, bias, geom)
    return check_output(y, at, {"weight": weight, "bias": bias})


def conv2d_backward(dy, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    name="conv2d_backward"):
    """Gradients of ``conv2d_forward`` → (dx, dweight, dbias) given the output gradient ``dy``."""
    at = where(name, "Convolution")
    x, weight, _, geom = _check(x, weight, None, stride, padding, dilation, groups, at)
    dy = float_array(dy, "output gradient", at, ndim=4, dtype=x.dtype)
    expected = (x.shape[0],) + geom.out_shape
    if dy.shape != expected:
        raise ValueError(f"{at}: output gradient shape {dy.shape} does not match the output {expected}")
    dx, dweight, dbias = conv2d_backward_dense(dy, x, weight, geom)
    check_output(dx, at, {"weight": weight})
    return dx, dweight, dbias
