"""Forward kernels of the binary weight format (``formats/binary.py``: sign bits, 64 to a uint64
word per output row, one scale alpha[o] per row).

- On float inputs, each output adds and subtracts inputs by the weight's signs and scales once
  (no multiply per weight; BinaryConnect, Courbariaux et al. 2015). With the row total
  T = Σ_k x[k] computed once, only the inputs under + bits are summed:

      y[n, o] = alpha[o] · (Σ_{k ∈ +(o)} x[n, k] − Σ_{k ∈ −(o)} x[n, k]) + b[o]
              = alpha[o] · (2 · Σ_{k ∈ +(o)} x[n, k] − T[n]) + b[o]

- On ±1 inputs (binary activations: a ``QuantizeActivation`` of one signed bit in front), the
  inputs are packed to sign bits as the weights are, and the dot product of two ±1 rows is
  the count of agreeing signs minus the disagreeing ones (Hubara et al., JMLR 2018, §2.4;
  XNOR-Net's XNOR-popcount, Rastegari et al. 2016):

      y[n, o] = alpha[o] · (2 · popcount(XNOR(x_n, w_o)) − K) + b[o]
              = alpha[o] · (K − 2 · popcount(x_n ⊕ w_o)) + b[o]

  A convolution's zero padding is neither +1 nor −1: each im2row row carries a mask of its
  positions inside the image, and the sum runs over them alone,
  y = alpha · (popcount(m) − 2 · popcount(m ∧ (x ⊕ w))) + b — the float product exactly.

``linear_forward`` and ``conv2d_forward`` pick the kernel (``engine/quantized.py`` calls them);
every backward pass decodes rows for BLAS as the other dense-pattern formats do.
"""

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import config
from numba.extending import intrinsic

from ._jit import JIT, JIT_PARALLEL, chunk_bounds, chunk_count
from .quantized import float_im2col


def _popcount_intrinsic():
    """``popcount(v)`` of a uint64 → uint64: LLVM's ctpop (one instruction where the host has
    POPCNT); plain Python's ``int.bit_count`` with the JIT disabled."""
    if config.DISABLE_JIT:
        return lambda v: np.uint64(int(v).bit_count())

    @intrinsic
    def popcount(typingctx, v):
        if v != types.uint64:
            return None

        def codegen(context, builder, signature, args):
            fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
            return builder.call(fn, args)

        return types.uint64(types.uint64), codegen

    return popcount


popcount = _popcount_intrinsic()


# ---------------------------------------------------------------------------------------------
# Float inputs: adds and subtracts


@njit(**JIT)
def _plus_sums(words, K, src, pos):
    # words: (⌈K/64⌉,) one row's sign bits; src: (K, L) → pos[:] = Σ_{k : bit k set} src[k]
    pos[:] = 0.0
    L = pos.shape[0]
    one = np.uint64(1)
    for k in range(K):
        if (words[k >> 6] >> np.uint64(k & 63)) & one:
            row = src[k]
            for p in range(L):
                pos[p] += row[p]


@njit(**JIT)
def _column_totals(src, total):
    # src: (K, L) → total[p] = Σ_k src[k, p]
    total[:] = 0.0
    for k in range(src.shape[0]):
        row = src[k]
        for p in range(total.shape[0]):
            total[p] += row[p]


@njit(**JIT_PARALLEL)
def binary_linear_forward(xT, words, scales, bias, chunks, yT):
    # xT: (K, N) the batch transposed; words: (O, ⌈K/64⌉) sign bits; scales, bias: (O,)
    # yT: (O, N), every cell written: yT[o] = scales[o] · (2 · Σ_{k ∈ +(o)} xT[k] − Σ_k xT[k]) + b[o]
    K, N = xT.shape
    O = yT.shape[0]
    total = np.empty(N, dtype=xT.dtype)
    _column_totals(xT, total)
    for t in prange(chunks):
        pos = np.empty(N, dtype=xT.dtype)
        lo, hi = chunk_bounds(t, chunks, O)
        for o in range(lo, hi):
            _plus_sums(words[o], K, xT, pos)
            out = yT[o]
            s = scales[o]
            for n in range(N):
                out[n] = s * (2.0 * pos[n] - total[n]) + bias[o]


@njit(**JIT_PARALLEL)
def binary_conv2d_forward(x, words, scales, bias, kh, kw, sh, sw, ph, pw, dh, dw, groups, chunks,
                          y):
    # x: (N, C, H, W); words: (O, ⌈C/G·kh·kw / 64⌉) sign bits; scales, bias: (O,)
    # y: (N, O, oh, ow), every cell written
    # y[n, o, :] = scales[o] · (2 · Σ_{k ∈ +(o)} cols_n,g[k] − Σ_k cols_n,g[k]) + b[o]
    # (cols: the im2col of example n's group g = o // (O/G)); tasks (example, group) over chunks
    N, C, H, W = x.shape
    O, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    Og, Cg = O // groups, C // groups
    K = Cg * kh * kw
    P = oh * ow
    y3 = y.reshape((N, O, P))
    for t in prange(chunks):
        cols = np.empty((K, P), dtype=x.dtype)
        padded = np.zeros((Cg, H + 2 * ph, W + 2 * pw), dtype=x.dtype)
        pos = np.empty(P, dtype=x.dtype)
        total = np.empty(P, dtype=x.dtype)
        lo, hi = chunk_bounds(t, chunks, N * groups)
        for task in range(lo, hi):
            n = task // groups
            g = task % groups
            padded[:, ph:ph + H, pw:pw + W] = x[n, g * Cg:(g + 1) * Cg]
            float_im2col(padded, kh, kw, sh, sw, dh, dw, oh, ow, cols)
            _column_totals(cols, total)
            for o in range(g * Og, (g + 1) * Og):
                _plus_sums(words[o], K, cols, pos)
                out = y3[n, o]
                s = scales[o]
                for p in range(P):
                    out[p] = s * (2.0 * pos[p] - total[p]) + bias[o]


# ---------------------------------------------------------------------------------------------
# ±1 inputs: XNOR and popcount


@njit(**JIT)
def all_signs(x):
    # x: (M,) → whether every value is +1 or −1 (binary activations)
    for i in range(x.shape[0]):
        v = x[i]
        if v != 1.0 and v != -1.0:  # NaN fails too
            return False
    return True


@njit(**JIT)
def sign_bits(x, bits):
    # x: (M, K) of ±1 (checked by the caller); bits: (M, ⌈K/64⌉) zeroed ← bit k set where x = +1
    one = np.uint64(1)
    for m in range(x.shape[0]):
        src = x[m]
        dst = bits[m]
        for k in range(x.shape[1]):
            if src[k] > 0:
                dst[k >> 6] |= one << np.uint64(k & 63)


@njit(**JIT_PARALLEL)
def xnor_linear_forward(xbits, words, K, scales, bias, chunks, y):
    # xbits: (N, ⌈K/64⌉) sign bits of ±1 inputs, zero past K; words: (O, ⌈K/64⌉) sign bits
    # of the weight, zero past K; scales, bias: (O,); y: (N, O), every cell written
    # y[n, o] = scales[o] · (K − 2 · popcount(xbits[n] ⊕ words[o])) + b[o]
    N, nw = xbits.shape
    O = words.shape[0]
    for t in prange(chunks):
        lo, hi = chunk_bounds(t, chunks, O)
        for o in range(lo, hi):
            w = words[o]
            s = scales[o]
            for n in range(N):
                a = xbits[n]
                differ = np.uint64(0)
                for i in range(nw):
                    differ += popcount(a[i] ^ w[i])
                y[n, o] = s * (K - 2 * np.int64(differ)) + bias[o]


@njit(**JIT)
def sign_im2row(padded, kh, kw, sh, sw, dh, dw, oh, ow, bits, mask):
    # padded: (Cg, H + 2·ph, W + 2·pw) int8: +1, −1 inside the image, 0 in the padding
    # bits, mask: (oh·ow, ⌈Cg·kh·kw / 64⌉) uint64 ← for k = (c·kh + i)·kw + j of row y·ow + x,
    # v = padded[c, y·sh + i·dh, x·sw + j·dw]: bit k of bits set where v = +1, of mask where v ≠ 0
    Cg = padded.shape[0]
    one = np.uint64(1)
    bits[:] = 0
    mask[:] = 0
    for oy in range(oh):
        for ox in range(ow):
            p = oy * ow + ox
            b = bits[p]
            m = mask[p]
            k = 0
            for c in range(Cg):
                for i in range(kh):
                    src = padded[c, oy * sh + i * dh]
                    x0 = ox * sw
                    for j in range(kw):
                        v = src[x0 + j * dw]
                        bit = one << np.uint64(k & 63)
                        if v != 0:
                            m[k >> 6] |= bit
                            if v > 0:
                                b[k >> 6] |= bit
                        k += 1


@njit(**JIT_PARALLEL)
def xnor_conv2d_forward(x, words, scales, bias, kh, kw, sh, sw, ph, pw, dh, dw, groups, chunks,
                        y):
    # x: (N, C, H, W) of ±1 (checked by the caller); words: (O, ⌈C/G·kh·kw / 64⌉) sign bits,
    # zero past K; scales, bias: (O,); y: (N, O, oh, ow), every cell written
    # y[n, o, p] = scales[o] · (popcount(m_p) − 2 · popcount(m_p ∧ (x_p ⊕ words[o]))) + b[o],
    # x_p, m_p: sign bits and in-image mask of row p of example n's group g = o // (O/G) im2row
    N, C, H, W = x.shape
    O, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    Og, Cg = O // groups, C // groups
    nw = words.shape[1]
    P = oh * ow
    y3 = y.reshape((N, O, P))
    for t in prange(chunks):
        padded = np.zeros((Cg, H + 2 * ph, W + 2 * pw), dtype=np.int8)  # the border stays 0
        bits = np.empty((P, nw), dtype=np.uint64)
        mask = np.empty((P, nw), dtype=np.uint64)
        valid = np.empty(P, dtype=np.int64)
        lo, hi = chunk_bounds(t, chunks, N * groups)
        for task in range(lo, hi):
            n = task // groups
            g = task % groups
            for c in range(Cg):
                for r in range(H):
                    src = x[n, g * Cg + c, r]
                    dst = padded[c, ph + r]
                    for q in range(W):
                        dst[pw + q] = 1 if src[q] > 0 else -1
            sign_im2row(padded, kh, kw, sh, sw, dh, dw, oh, ow, bits, mask)
            for p in range(P):
                count = np.uint64(0)
                for i in range(nw):
                    count += popcount(mask[p, i])
                valid[p] = np.int64(count)
            for o in range(g * Og, (g + 1) * Og):
                w = words[o]
                s = scales[o]
                out = y3[n, o]
                for p in range(P):
                    a = bits[p]
                    m = mask[p]
                    differ = np.uint64(0)
                    for i in range(nw):
                        differ += popcount(m[i] & (a[i] ^ w[i]))
                    out[p] = s * (valid[p] - 2 * np.int64(differ)) + bias[o]


# ---------------------------------------------------------------------------------------------
# What engine/quantized.py calls


def is_binary_input(x):
    """Whether every value of ``x`` is +1 or −1 (the XNOR kernels apply)."""
    return x.size > 0 and bool(all_signs(x.reshape(-1)))


def linear_forward(x, fmt, bias, *, xnor=None):
    """y = x · Wᵀ + b for a ``binary`` format: the XNOR-popcount kernel on ±1 inputs, else the
    add/subtract kernel. ``xnor``: force (True: the caller checked x is ±1) or refuse it."""
    dtype = x.dtype
    bias = np.zeros(fmt.rows, dtype=dtype) if bias is None else bias
    scales = fmt.scales.astype(dtype, copy=False)
    if xnor is None:
        xnor = is_binary_input(x)
    if xnor:
        xbits = np.zeros((x.shape[0], fmt.words.shape[1]), dtype=np.uint64)
        sign_bits(x, xbits)
        y = np.empty((x.shape[0], fmt.rows), dtype=dtype)
        xnor_linear_forward(xbits, fmt.words, fmt.cols, scales, bias, chunk_count(fmt.rows, 16), y)
        return y
    yT = np.empty((fmt.rows, x.shape[0]), dtype=dtype)
    binary_linear_forward(np.ascontiguousarray(x.T), fmt.words, scales, bias,
                          chunk_count(fmt.rows, 16), yT)
    return np.ascontiguousarray(yT.T)


def conv2d_forward(x, fmt, bias, geom, *, xnor=None):
    """y = conv(x, W) + b for a ``binary`` format (see ``linear_forward``)."""
    if x.shape[0] == 0:
        return None
    dtype = x.dtype
    bias = np.zeros(geom.out_channels, dtype=dtype) if bias is None else bias
    scales = fmt.scales.astype(dtype, copy=False)
    y = np.empty((x.shape[0],) + geom.out_shape, dtype=dtype)
    chunks = max(1, min(numba.get_num_threads(), x.shape[0] * geom.groups))
    if xnor is None:
        xnor = is_binary_input(x)
    kernel = xnor_conv2d_forward if xnor else binary_conv2d_forward
    kernel(np.ascontiguousarray(x), fmt.words, scales, bias, *geom.kernel, *geom.kernel_args(),
           geom.groups, chunks, y)
    return y
