"""Forward kernels of the quantized weight formats: int8 × 8-bit activations with int32 sums, and
the ternary format's add/subtract kernel.

A quantized layer's float path decodes its weight block by block for BLAS (the formats'
``weight_rows``), which serves every input and every backward pass. The kernels here are the
forward pass the format was made for, taken when the input allows it:

- int8 weights (``formats/int8.py``) when the input holds 8-bit integers — what a
  ``QuantizeActivation`` layer in front of the layer gives (codes 0..255 or −127..127):

      y[n, o] = scales[o] · Σ_k codes[o, k] · x[n, k] + b[o]      (Σ in int32; Vanhoucke et al. 2011)

  Both paths give the same outputs on such inputs (to float rounding); on any other input
  (float activations, a finite-difference probe) the float path runs.
- binary weights (``formats/binary.py``), on any input: adds and subtracts, or XNOR and
  popcount on ±1 inputs (``engine/binary.py``).
- ternary weights (``formats/ternary.py``), on any input: each output is a sum and a
  difference of inputs, scaled once (no multiply per weight; Zhu et al. 2017):

      y[n, o] = wp · Σ_{k : code[o, k] = +} x[n, k] − wn · Σ_{k : code[o, k] = −} x[n, k] + b[o]

The int8 products run in tiles of three activation rows by four weight rows whose inner loop is
one LLVM vector block per 16 values of k (``tile_dots_intrinsic``): LLVM's vectoriser widens
Numba's int8 products to 64-bit lanes (Numba promotes small integers to intp), a quarter of the
lanes. The activations are widened to int16 once per call (the codes of a batch are small); in
the tile, each weight row's 16 int8 are sign-extended once and multiply-added pairwise into
int32 lanes with each activation row — AVX2's ``vpmaddwd``, 16 multiply-adds per instruction,
where the host has it, else the same sums in plain 32-bit vector arithmetic any LLVM target
lowers. int32 sums cannot overflow for K ≤ 2³¹ / (255 · 127) = 66,311 (``MAX_INT8_K``; longer
rows take the float path).
"""

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils, config
from numba.extending import intrinsic

from ._jit import JIT, JIT_PARALLEL, chunk_bounds, chunk_count

# Longest row (K) whose int32 sums of 8-bit products cannot overflow.
MAX_INT8_K = (2 ** 31 - 1) // (255 * 127)
# Values of k per vector block of a tile.
BLOCK = 16


def _host_has_avx2():
    import llvmlite.binding as llvm

    try:
        return "+avx2" in llvm.get_host_cpu_features().flatten().split(",")
    except RuntimeError:  # features unknown on this host: the portable path
        return False


def tile_dots_intrinsic(rows, cols, pmaddwd):
    """A Numba intrinsic ``tile(a, a_row, b, b_rows, blocks)`` → UniTuple of rows·cols int32.

    a: (M, K) int16 codes, b: (O, K) int8, both with contiguous rows; the tile's activation rows
    are a_row … a_row + rows − 1 and its weight rows the ``cols`` indices of the tuple b_rows
    (all in range: not checked); k runs over [0, 16·blocks) (≤ K: not checked). Result
    r·cols + c is Σ_k a[a_row + r, k] · b[b_rows[c], k] in int32. Per block of 16 values of k,
    each weight row is loaded and sign-extended once and each activation row read once per
    weight row. ``pmaddwd``: AVX2's vpmaddwd (the host must have AVX2: it multiplies int16
    pairs and adds them into 8 int32 lanes), else portable 32-bit vector code.
    """
    n_out = rows * cols
    if config.DISABLE_JIT:  # plain Python cannot run LLVM code: the sums it stands for
        return _plain_tile(rows)

    @intrinsic
    def tile(typingctx, a, a_row, b, b_rows, blocks):
        if not (isinstance(a, types.Array) and isinstance(b, types.Array)
                and a.dtype == types.int16 and b.dtype == types.int8):
            return None
        sig = types.UniTuple(types.int32, n_out)(a, a_row, b, b_rows, blocks)

        def codegen(context, builder, signature, args):
            a_val, a_row_val, b_val, b_rows_val, n = args
            aty, a_row_ty, bty, b_rows_ty, _ = signature.args
            i8, i16, i32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
            idx = n.type
            lanes = BLOCK if pmaddwd else 8  # values of k per vector
            acc_ty = ir.VectorType(i32, 8)
            a_ty, b_ty = ir.VectorType(i16, lanes), ir.VectorType(i8, lanes)
            wide_ty = ir.VectorType(i16 if pmaddwd else i32, lanes)
            madd = None
            if pmaddwd:
                madd = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(acc_ty, [wide_ty, wide_ty]),
                    "llvm.x86.avx2.pmadd.wd")

            def row_pointer(arr_val, arr_ty, row, row_ty, elem):
                arr = context.make_array(arr_ty)(context, builder, arr_val)
                stride = cgutils.unpack_tuple(builder, arr.strides)[0]  # bytes
                row = context.cast(builder, row, row_ty, types.intp)
                data = builder.bitcast(arr.data, i8.as_pointer())
                return builder.bitcast(builder.gep(data, [builder.mul(row, stride)]),
                                       elem.as_pointer())

            a_rows = [builder.add(context.cast(builder, a_row_val, a_row_ty, types.intp),
                                  ir.Constant(idx, r)) for r in range(rows)]
            a_ptrs = [row_pointer(a_val, aty, r, types.intp, i16) for r in a_rows]
            picks = cgutils.unpack_tuple(builder, b_rows_val, cols)
            b_ptrs = [row_pointer(b_val, bty, p, t, i8) for p, t in zip(picks, b_rows_ty.types)]
            zero = ir.Constant(acc_ty, None)
            entry = builder.block
            loop = builder.append_basic_block("tile.loop")
            done = builder.append_basic_block("tile.done")
            builder.cbranch(builder.icmp_signed(">", n, ir.Constant(idx, 0)), loop, done)

            builder.position_at_end(loop)
            k = builder.phi(idx)
            accs = [builder.phi(acc_ty) for _ in range(n_out)]
            k.add_incoming(ir.Constant(idx, 0), entry)
            for acc in accs:
                acc.add_incoming(zero, entry)
            offset = builder.mul(k, ir.Constant(idx, BLOCK))

            def load(ptr, vec_ty, part, align):
                at = builder.gep(ptr, [builder.add(offset, ir.Constant(idx, part * lanes))])
                return builder.load(builder.bitcast(at, vec_ty.as_pointer()), align=align)

            new = list(accs)
            for part in range(BLOCK // lanes):
                bv = [builder.sext(load(p, b_ty, part, 1), wide_ty) for p in b_ptrs]
                for r in range(rows):
                    av = load(a_ptrs[r], a_ty, part, 2)
                    if not pmaddwd:
                        av = builder.sext(av, wide_ty)
                    for c in range(cols):
                        i = r * cols + c
                        if pmaddwd:
                            prod = builder.call(madd, [av, bv[c]])
                        else:
                            prod = builder.mul(av, bv[c])
                        new[i] = builder.add(new[i], prod)
            k_next = builder.add(k, ir.Constant(idx, 1))
            tail = builder.block
            k.add_incoming(k_next, tail)
            for acc, v in zip(accs, new):
                acc.add_incoming(v, tail)
            builder.cbranch(builder.icmp_signed("<", k_next, n), loop, done)

            builder.position_at_end(done)
            finals = []
            for v in new:
                phi = builder.phi(acc_ty)
                phi.add_incoming(zero, entry)
                phi.add_incoming(v, tail)
                finals.append(phi)
            sums = []
            for phi in finals:  # horizontal sum of the 8 lanes
                s = builder.extract_element(phi, ir.Constant(i32, 0))
                for lane in range(1, 8):
                    s = builder.add(s, builder.extract_element(phi, ir.Constant(i32, lane)))
                sums.append(s)
            return context.make_tuple(builder, signature.return_type, sums)

        return sig, codegen

    return tile


def _plain_tile(rows):
    """``tile`` for ``NUMBA_DISABLE_JIT=1``: the same int32 sums as one NumPy product (k only
    up to b's row length: beyond it the intrinsic reads padding that meets a's zeros)."""

    def tile(a, a_row, b, b_rows, blocks):
        k = min(BLOCK * blocks, b.shape[1])
        sums = a[a_row:a_row + rows, :k].astype(np.int32) @ b[list(b_rows), :k].astype(np.int32).T
        return tuple(np.int32(v) for v in sums.reshape(-1))

    return tile


HAS_AVX2 = _host_has_avx2()
# 3 activation rows × 4 weight rows: 12 int32 accumulators and 4 widened weight vectors fill
# AVX2's 16 registers (CPU time on a 64 × 4096 × 4096 product, one Zen 2 core each: 3 × 4, 2 × 4
# and 6 × 2 within 10 % of each other, 45 % faster than 2 × 4 with int8 activations widened in
# the loop); single rows (a batch of 1, the last rows) take a 1 × 4 tile.
TILE_ROWS = 3
_tile3 = tile_dots_intrinsic(3, 4, HAS_AVX2)
_tile1 = tile_dots_intrinsic(1, 4, HAS_AVX2)


# Bytes of activation rows a tile sweep keeps in cache when they outweigh the weight rows: the
# product then walks all its weight rows over one block of activation rows at a time (AlexNet's
# conv2 has 729 rows of 1,200 codes = 1.7 MiB per example and group, which would otherwise
# stream from L3 for every four weight rows; an FC layer's weights outweigh its batch, and its
# batch is swept whole for each four weight rows).
ROW_BLOCK_BYTES = 96 << 10


@njit(**JIT)
def int8_rows_product(a, b, scales, bias, o_lo, o_hi, out, transposed):
    # a: (M, Kp) int16 codes, zero from K to Kp = 16·⌈K/16⌉; b: (O, K) int8 rows in a buffer
    # that extends at least Kp − K bytes past the last row (the tile reads each row's last
    # block whole; a is zero there); scales, bias: (O,)
    # out[m, o] (out[o, m] if ``transposed``) = scales[o] · Σ_k b[o, k] · a[m, k] + bias[o]
    # for o ∈ [o_lo, o_hi) and every m, in tiles of 3 × 4 (1 × 4 for the last M mod 3 rows);
    # a tile at the end of the o range repeats its last row (computed, not written).
    M = a.shape[0]
    blocks = a.shape[1] // 16
    step = M
    if 2 * M * a.shape[1] > (o_hi - o_lo) * b.shape[1]:
        step = max(3, ROW_BLOCK_BYTES // max(2 * a.shape[1], 1) // 3 * 3)
    for m_lo in range(0, M, step):
        m_hi = min(m_lo + step, M)
        full = m_hi - (m_hi - m_lo) % 3
        for o0 in range(o_lo, o_hi, 4):
            last = o_hi - 1
            o1, o2, o3 = min(o0 + 1, last), min(o0 + 2, last), min(o0 + 3, last)
            width = min(4, o_hi - o0)
            m0 = m_lo
            while m0 < m_hi:
                height = 3 if m0 < full else 1
                if height == 3:
                    s = _tile3(a, m0, b, (o0, o1, o2, o3), blocks)
                else:
                    t = _tile1(a, m0, b, (o0, o1, o2, o3), blocks)
                    z = np.int32(0)
                    s = (t[0], t[1], t[2], t[3], z, z, z, z, z, z, z, z)
                for r in range(height):
                    for c in range(width):
                        o = o0 + c
                        v = scales[o] * s[r * 4 + c] + bias[o]
                        if transposed:
                            out[o, m0 + r] = v
                        else:
                            out[m0 + r, o] = v
                m0 += height


@njit(**JIT_PARALLEL)
def int8_linear_forward(xq, codes, scales, bias, chunks, y):
    # xq: (N, Kp) int16 codes of 8-bit activations, zero-padded (see int8_rows_product)
    # codes: (O, K) int8; scales, bias: (O,); y: (N, O), every cell written
    # y[n, o] = scales[o] · Σ_k codes[o, k] · xq[n, k] + bias[o]
    # Output rows split over chunks (four at a time), each over the whole batch.
    O = codes.shape[0]
    for t in prange(chunks):
        lo, hi = chunk_bounds(t, chunks, (O + 3) // 4)
        int8_rows_product(xq, codes, scales, bias, 4 * lo, min(4 * hi, O), y, False)


@njit(**JIT)
def int8_im2row(padded, kh, kw, sh, sw, dh, dw, oh, ow, rows):
    # padded: (Cg, H + 2·ph, W + 2·pw) codes of one example's group, zero-padded
    # rows: (oh·ow, ≥ Cg·kh·kw) ← rows[y·ow + x, (c·kh + i)·kw + j] = padded[c, y·sh + i·dh, x·sw + j·dw]
    Cg = padded.shape[0]
    for oy in range(oh):
        for ox in range(ow):
            row = rows[oy * ow + ox]
            r = 0
            for c in range(Cg):
                for i in range(kh):
                    src = padded[c, oy * sh + i * dh]
                    x0 = ox * sw
                    for j in range(kw):
                        row[r + j] = src[x0 + j * dw]
                    r += kw


@njit(**JIT_PARALLEL)
def int8_conv2d_forward(xq, codes, scales, bias, kh, kw, sh, sw, ph, pw, dh, dw, groups, chunks,
                        y):
    # xq: (N, C, H, W) int16 codes of 8-bit activations; codes: (O, C/G·kh·kw) int8 rows (in a
    # buffer extending past them, see int8_rows_product); scales, bias: (O,)
    # y: (N, O, oh, ow), every cell written
    # y[n, o, p] = scales[o] · Σ_k codes[o, k] · rows_n,g[p, k] + bias[o], rows = im2row of the
    # example's group g = o // (O/G): receptive fields as contiguous rows, zero-padded to a
    # multiple of 16; tasks (example, group) split over chunks
    N, C, H, W = xq.shape
    O, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    Og, Cg = O // groups, C // groups
    K = Cg * kh * kw
    Kp = (K + 15) // 16 * 16
    P = oh * ow
    y3 = y.reshape((N, O, P))
    for t in prange(chunks):
        rows = np.zeros((P, Kp), dtype=xq.dtype)  # columns K..Kp stay zero
        padded = np.zeros((Cg, H + 2 * ph, W + 2 * pw), dtype=xq.dtype)  # the border stays zero
        lo, hi = chunk_bounds(t, chunks, N * groups)
        for task in range(lo, hi):
            n = task // groups
            g = task % groups
            padded[:, ph:ph + H, pw:pw + W] = xq[n, g * Cg:(g + 1) * Cg]
            int8_im2row(padded, kh, kw, sh, sw, dh, dw, oh, ow, rows)
            int8_rows_product(rows, codes, scales, bias, g * Og, (g + 1) * Og, y3[n], True)


@njit(**JIT)
def to_codes(x, out):
    # x: (M, K) floats; out: (M, ≥ K) int16 ← x while every value is an integer in −127..255
    # → (all were, min, max). Serial: one pass costs less than waking threads.
    lo = 0.0
    hi = 0.0
    for m in range(x.shape[0]):
        src = x[m]
        dst = out[m]
        for k in range(x.shape[1]):
            v = src[k]
            if not (v == np.floor(v) and -127.0 <= v <= 255.0):  # NaN fails too
                return False, lo, hi
            lo = min(lo, v)
            hi = max(hi, v)
            dst[k] = np.int16(v)
    return True, lo, hi


def eight_bit_codes(x, width=None):
    """x (M, K) as int16 codes (M, width ≥ K; zero from K on) if it holds only integers of
    0..255 or of −127..127 (8-bit activation codes), else None (the caller takes the float
    path)."""
    if x.size == 0:
        return None
    out = np.zeros((x.shape[0], width or x.shape[1]), dtype=np.int16)
    ok, lo, hi = to_codes(x, out)
    if not ok or (lo < 0 and hi > 127):
        return None
    return out


def padded_width(K):
    """K rounded up to a whole number of 16-value blocks."""
    return (K + BLOCK - 1) // BLOCK * BLOCK


# ---------------------------------------------------------------------------------------------
# Ternary weights: adds and subtracts


@njit(**JIT)
def _ternary_row_sums(codes, base, K, src, pos, neg):
    # pos ← Σ_{k : code[base + k] = 1} src[k],  neg ← Σ_{k : code[base + k] = 2} src[k]
    # (src: (K, L) rows; codes: 2-bit, four to a byte, LSB first)
    pos[:] = 0.0
    neg[:] = 0.0
    L = pos.shape[0]
    for k in range(K):
        j = base + k
        c = (np.int64(codes[j >> 2]) >> ((j & 3) << 1)) & 3
        if c == 1:
            row = src[k]
            for p in range(L):
                pos[p] += row[p]
        elif c == 2:
            row = src[k]
            for p in range(L):
                neg[p] += row[p]


@njit(**JIT_PARALLEL)
def ternary_linear_forward(xT, codes, wp, wn, bias, chunks, yT):
    # xT: (K, N) the batch transposed; codes: (⌈O·K / 4⌉,) 2-bit codes; bias: (O,)
    # yT: (O, N), every cell written: yT[o] = wp · Σ_{k ∈ +(o)} xT[k] − wn · Σ_{k ∈ −(o)} xT[k] + b[o]
    K, N = xT.shape
    O = yT.shape[0]
    for t in prange(chunks):
        pos = np.empty(N, dtype=xT.dtype)
        neg = np.empty(N, dtype=xT.dtype)
        lo, hi = chunk_bounds(t, chunks, O)
        for o in range(lo, hi):
            _ternary_row_sums(codes, o * K, K, xT, pos, neg)
            out = yT[o]
            for n in range(N):
                out[n] = wp * pos[n] - wn * neg[n] + bias[o]


@njit(**JIT)
def float_im2col(padded, kh, kw, sh, sw, dh, dw, oh, ow, cols):
    # padded: (Cg, H + 2·ph, W + 2·pw) one example's group, zero-padded
    # cols: (Cg·kh·kw, oh·ow) ← cols[(c·kh + i)·kw + j, y·ow + x] = padded[c, y·sh + i·dh, x·sw + j·dw]
    Cg = padded.shape[0]
    for c in range(Cg):
        for i in range(kh):
            for j in range(kw):
                dst = cols[(c * kh + i) * kw + j]
                for oy in range(oh):
                    src = padded[c, oy * sh + i * dh]
                    for ox in range(ow):
                        dst[oy * ow + ox] = src[ox * sw + j * dw]


@njit(**JIT_PARALLEL)
def ternary_conv2d_forward(x, codes, wp, wn, bias, kh, kw, sh, sw, ph, pw, dh, dw, groups,
                           chunks, y):
    # x: (N, C, H, W); codes: 2-bit codes of the (O, C/G·kh·kw) weight; bias: (O,)
    # y: (N, O, oh, ow), every cell written
    # y[n, o, :] = wp · Σ_{k ∈ +(o)} cols_n,g[k] − wn · Σ_{k ∈ −(o)} cols_n,g[k] + b[o]
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
        neg = np.empty(P, dtype=x.dtype)
        lo, hi = chunk_bounds(t, chunks, N * groups)
        for task in range(lo, hi):
            n = task // groups
            g = task % groups
            padded[:, ph:ph + H, pw:pw + W] = x[n, g * Cg:(g + 1) * Cg]
            float_im2col(padded, kh, kw, sh, sw, dh, dw, oh, ow, cols)
            for o in range(g * Og, (g + 1) * Og):
                _ternary_row_sums(codes, o * K, K, cols, pos, neg)
                out = y3[n, o]
                for p in range(P):
                    out[p] = wp * pos[p] - wn * neg[p] + bias[o]


# ---------------------------------------------------------------------------------------------
# What linear.py and conv.py call


def _int8_parts(fmt, bias, O, dtype):
    codes = fmt.kernel_codes()
    bias = np.zeros(O, dtype=dtype) if bias is None else bias
    return codes, fmt.scales, bias


def linear_forward(x, fmt, bias):
    """y = x · Wᵀ + b by the format's integer kernel → y, or None where it does not apply (this
    format has none, or the input is not what it takes)."""
    if fmt.kind == "int8":
        if fmt.cols > MAX_INT8_K:
            return None
        xq = eight_bit_codes(x, padded_width(fmt.cols))
        if xq is None:
            return None
        codes, scales, bias = _int8_parts(fmt, bias, fmt.rows, x.dtype)
        y = np.empty((x.shape[0], fmt.rows), dtype=x.dtype)
        chunks = chunk_count((fmt.rows + 3) // 4)
        int8_linear_forward(xq, codes, scales, bias, chunks, y)
        return y
    if fmt.kind == "ternary":
        bias = np.zeros(fmt.rows, dtype=x.dtype) if bias is None else bias
        yT = np.empty((fmt.rows, x.shape[0]), dtype=x.dtype)
        ternary_linear_forward(np.ascontiguousarray(x.T), fmt.codes, x.dtype.type(fmt.scales[0]),
                               x.dtype.type(fmt.scales[1]), bias, chunk_count(fmt.rows, 16), yT)
        return np.ascontiguousarray(yT.T)
    if fmt.kind == "binary":
        from . import binary  # imports this module's im2col

        return binary.linear_forward(x, fmt, bias)
    return None


def conv2d_forward(x, fmt, bias, geom):
    """y = conv(x, W) + b by the format's integer kernel → y, or None (see ``linear_forward``)."""
    if fmt.kind == "int8":
        if fmt.cols > MAX_INT8_K or x.shape[0] == 0:
            return None
        xq = eight_bit_codes(x.reshape(x.shape[0], -1))
        if xq is None:
            return None
        xq = xq.reshape(x.shape)
        codes, scales, bias = _int8_parts(fmt, bias, geom.out_channels, x.dtype)
        y = np.empty((x.shape[0],) + geom.out_shape, dtype=x.dtype)
        chunks = max(1, min(numba.get_num_threads(), x.shape[0] * geom.groups))
        int8_conv2d_forward(xq, codes, scales, bias, *geom.kernel, *geom.kernel_args(),
                            geom.groups, chunks, y)
        return y
    if fmt.kind == "ternary" and x.shape[0]:
        bias = np.zeros(geom.out_channels, dtype=x.dtype) if bias is None else bias
        y = np.empty((x.shape[0],) + geom.out_shape, dtype=x.dtype)
        chunks = max(1, min(numba.get_num_threads(), x.shape[0] * geom.groups))
        ternary_conv2d_forward(x, fmt.codes, x.dtype.type(fmt.scales[0]),
                               x.dtype.type(fmt.scales[1]), bias, *geom.kernel,
                               *geom.kernel_args(), geom.groups, chunks, y)
        return y
    if fmt.kind == "binary":
        from . import binary

        return binary.conv2d_forward(x, fmt, bias, geom)
    return None
