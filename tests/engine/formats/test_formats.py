"""engine/formats/: every weight format against the dense kernels, the formats' invariants (storage
round trips, sizes, index dtypes, bit packing) and the rejection of malformed structures.

The kernels of a format are checked against the dense kernels (``conv2d_forward_dense``,
``conv2d_backward_dense``, ``linear_forward_dense``, ``linear_backward_dense``, themselves tested
against SciPy and torch in ``tests/engine/test_conv.py`` and ``test_linear.py``) run on the
format's ``to_dense()``. The gradient of the stored values is checked against
``reduce_ref``, which rebuilds it from the dense dL/dW and the format's unpacked structure
(``indices``/``indptr``, ``code_array()``, the gap stream of ``entries()``) in plain NumPy: it
shares no code with the engine's ``reduce_dense_grad``, which is checked against it too.
"""

import math
import re
import subprocess
import sys

import numba
import numpy as np
import pytest
import scipy.sparse
from helpers import F32, F64, assert_close, check_gradients
from hypothesis import given, settings
from hypothesis import strategies as st

from robustcnn.engine import _jit
from robustcnn.engine.conv import (conv2d_backward_dense, conv2d_backward_format,
                                   conv2d_forward_dense, conv2d_forward_format, conv2d_geometry)
from robustcnn.engine.formats import (FORMATS, CodebookWeight, CSRWeight, DenseWeight,
                                      SparseCodebookWeight)
from robustcnn.engine.formats.base import pack_bits, packed_nbytes, read_packed, unpack_bits
from robustcnn.engine.formats.sparse_codebook import execution_entries
from robustcnn.engine.linear import (linear_backward_dense, linear_backward_format,
                                     linear_forward_dense, linear_forward_format)

KINDS = ("dense", "csr", "codebook", "sparse_codebook")
# The kernel tests also run the Huffman-coded format (decoded row by row as kernels run).
KERNEL_KINDS = KINDS + ("huffman",)
SPARSITIES = (0.0, 0.5, 0.9, 0.99, 1.0)
# Sparse sums run in another order than BLAS's: float64 agrees to a few ulps of the scale.
TIGHT = 1e-12
# Enough examples that every thread gets more than one (the backward splits the batch).
MANY = numba.config.NUMBA_NUM_THREADS + 3
FAST = settings(max_examples=20, deadline=None, derandomize=True)
LAYER = "conv2 (Convolution)"  # the ``at`` every rejection test passes

# The options every kernel test converts with: 4-bit codes hold the 15 levels of ``weight``
# plus 0.0 exactly; 3-bit gaps need fillers from a gap of 8 on (common at 90 % sparsity).
OPTIONS = {"dense": {}, "csr": {}, "codebook": dict(bits=4),
           "sparse_codebook": dict(code_bits=4, gap_bits=3), "huffman": dict(code_bits=4, gap_bits=3)}


# ---------------------------------------------------------------------------------------------
# Weights and references


def levels(rng, count):
    """``count`` distinct non-zero values, both signs, well apart from 0."""
    mags = np.sort(rng.uniform(0.1, 1.0, size=count))
    return mags * rng.choice([-1.0, 1.0], size=count)


def weight(rng, shape, sparsity, values=None):
    """A weight with exactly round(sparsity · size) zeros, the rest drawn from ``values``
    (default: 15 levels, so that every format stores it exactly)."""
    values = levels(rng, 15) if values is None else np.asarray(values)
    size = int(np.prod(shape))
    w = rng.choice(values, size=size)
    w[rng.permutation(size)[:round(sparsity * size)]] = 0.0
    return w.reshape(shape)


def make(kind, w, **options):
    return FORMATS[kind].from_dense(w, **(options or OPTIONS[kind]))


def sc_positions(gaps):
    """Positions of a gap stream, one entry at a time (position[e] = position[e−1] + gap[e] + 1)."""
    out, p = [], -1
    for g in gaps:
        p += int(g) + 1
        out.append(p)
    return np.array(out, dtype=np.int64)


def reduce_ref(fmt, dweight):
    """dL/d(stored values) from the dense dL/dW, from the format's unpacked structure."""
    d = np.asarray(dweight, dtype=np.float64).reshape(fmt.rows, fmt.cols)
    if fmt.kind == "dense":
        return {"weight": d.reshape(fmt.shape)}
    if fmt.kind == "csr":  # dW at the stored positions, row by row
        out = np.empty(fmt.indices.size)
        for o in range(fmt.rows):
            a, b = int(fmt.indptr[o]), int(fmt.indptr[o + 1])
            out[a:b] = d[o, fmt.indices[a:b]]
        return {"data": out}
    if fmt.kind == "huffman":  # the same entries as the sparse codebook it encodes
        fmt = fmt.decoded()
    flat = d.reshape(-1)
    if fmt.kind == "codebook":  # Deep Compression eq. 3: Σ over the weights with code c
        codes = fmt.code_array()
        return {"centroids": np.array([flat[codes == c].sum() for c in range(fmt.centroids.size)])}
    codes, gaps, _ = fmt.entries()
    positions = sc_positions(gaps)
    out = np.array([flat[positions[codes == c]].sum() for c in range(fmt.centroids.size)])
    out[0] = 0.0  # code 0 marks zeros and fillers: never trained
    return {"centroids": out}


def assert_grads(actual, expected, what, rtol=TIGHT):
    assert set(actual) == set(expected), f"{what}: gradient names {sorted(actual)}, " \
                                         f"expected {sorted(expected)}"
    for k in expected:
        assert_close(actual[k], expected[k], rtol, f"{what} d{k}")


# ---------------------------------------------------------------------------------------------
# Convolution: every format against the dense kernels

# (id, N, C, H, W, O, kh, kw, geometry)
CONV_CASES = [
    ("basic", 2, 3, 8, 8, 4, 3, 3, dict(padding=1)),
    ("stride2", 2, 4, 9, 9, 6, 3, 3, dict(stride=2)),
    ("stride_pad_hw", 2, 3, 9, 8, 5, 3, 2, dict(stride=(2, 3), padding=(1, 0))),
    ("dilation", 2, 3, 10, 9, 4, 3, 3, dict(dilation=2, padding=2)),
    ("dilation_hw", 2, 2, 9, 11, 3, 2, 3, dict(dilation=(1, 3), stride=(1, 2))),
    ("groups2", 2, 4, 7, 7, 6, 3, 3, dict(groups=2, padding=1)),
    ("groups4", 2, 8, 6, 6, 8, 3, 3, dict(groups=4, stride=(2, 1))),
    ("depthwise", 2, 6, 7, 7, 6, 3, 3, dict(groups=6, padding=1)),
    ("depthwise_x2_5x5", 2, 4, 9, 9, 8, 5, 5, dict(groups=4, stride=2, padding=2)),
    ("pointwise", 2, 6, 5, 5, 4, 1, 1, {}),  # 1×1, stride 1, pad 0: the columns are the image
    ("pointwise_groups2", 2, 6, 5, 4, 8, 1, 1, dict(groups=2)),
    ("1x1_stride2", 2, 5, 7, 7, 3, 1, 1, dict(stride=2)),
    ("1x1_pad1", 2, 5, 4, 4, 3, 1, 1, dict(padding=1)),
    ("batch1", 1, 3, 8, 7, 5, 3, 3, dict(padding=1)),
    (f"batch{MANY}", MANY, 3, 6, 6, 4, 3, 3, dict(padding=1)),
    ("single_pixel_padded", 2, 3, 1, 1, 2, 3, 3, dict(padding=1)),
]
CONV = {c[0]: c for c in CONV_CASES}


def conv_setup(case, rng):
    _, N, C, H, W, O, kh, kw, g = case
    geom = conv2d_geometry((C, H, W), (O, C // g.get("groups", 1), kh, kw), g.get("stride", 1),
                           g.get("padding", 0), g.get("dilation", 1), g.get("groups", 1))
    return rng.standard_normal((N, C, H, W)), rng.standard_normal(O), geom


def check_conv_format(fmt, x, b, geom, what, rtol=TIGHT):
    """Forward, dx, dbias and the stored values' gradient of ``fmt`` against the dense kernels
    on ``fmt.to_dense()``; the format's own ``reduce_dense_grad`` against ``reduce_ref``."""
    w = fmt.to_dense()
    y = conv2d_forward_format(x, fmt, b, geom)
    assert y.dtype == x.dtype
    assert_close(y, conv2d_forward_dense(x, w, b, geom), rtol, f"{what} forward")
    dy = np.random.default_rng(7).standard_normal(y.shape).astype(x.dtype)
    dx, grads, db = conv2d_backward_format(dy, x, fmt, geom)
    dx_ref, dw_ref, db_ref = conv2d_backward_dense(dy, x, w, geom)
    assert_close(dx, dx_ref, rtol, f"{what} dx")
    assert_close(db, db_ref, rtol, f"{what} dbias")
    want = reduce_ref(fmt, dw_ref)
    assert_grads(grads, want, what, rtol)
    assert_grads(fmt.reduce_dense_grad(dw_ref), want, f"{what} reduce_dense_grad", rtol)
    for k, g in grads.items():
        assert g.dtype == x.dtype, f"{what}: d{k} is {g.dtype}"
    return y, dx, grads


@pytest.mark.parametrize("sparsity", SPARSITIES, ids=lambda s: f"sparse{s:g}")
@pytest.mark.parametrize("kind", KERNEL_KINDS)
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_format_matches_dense(case, kind, sparsity, rng):
    x, b, geom = conv_setup(case, rng)
    w = weight(rng, geom.weight_shape, sparsity)
    fmt = make(kind, w)
    # Storage round trip: the format must hold exactly the weight it was given.
    assert np.array_equal(fmt.to_dense(), w)
    check_conv_format(fmt, x, b, geom, f"{kind} {case[0]}")


@pytest.mark.parametrize("density_threshold", [0.0, 2.0], ids=["gemm_dw", "per_entry_dw"])
@pytest.mark.parametrize("kind", ["csr", "sparse_codebook", "huffman"])
@pytest.mark.parametrize("case", ["basic", "stride_pad_hw", "groups2", "pointwise", "batch1"])
def test_conv_sparse_weight_gradient_paths(case, kind, density_threshold, rng, monkeypatch):
    # A sparse weight's gradient comes from one GEMM (gathered) or from a dot per stored weight,
    # chosen by its density; force each path at a density where the other one would run.
    import robustcnn.engine.conv as conv

    monkeypatch.setattr(conv, "SPARSE_DW_DENSITY", density_threshold)
    x, b, geom = conv_setup(CONV[case], rng)
    fmt = make(kind, weight(rng, geom.weight_shape, 0.9 if density_threshold else 0.99))
    assert fmt.nnz() <= fmt.stored_entries() <= fmt.size  # what the choice reads, undecoded
    check_conv_format(fmt, x, b, geom, f"{kind} {case} threshold {density_threshold}")


def empty_rows_and_columns(rng, shape):
    """Rows 0 and 2 (output channels) and every third column (receptive-field tap) all zero."""
    w = weight(rng, shape, 0.3)
    rows = w.reshape(shape[0], -1)
    rows[[0, 2]] = 0.0
    rows[:, ::3] = 0.0
    return w


@pytest.mark.parametrize("kind", KERNEL_KINDS)
@pytest.mark.parametrize("case", ["basic", "groups2", "pointwise", "stride2", "depthwise"])
def test_conv_empty_rows_and_columns(case, kind, rng):
    x, b, geom = conv_setup(CONV[case], rng)
    w = empty_rows_and_columns(rng, geom.weight_shape)
    fmt = make(kind, w)
    assert np.array_equal(fmt.to_dense(), w)  # storage round trip
    y, _, _ = check_conv_format(fmt, x, b, geom, f"{kind} {case}")
    # An empty output channel is its bias alone.
    assert_close(y[:, 0], np.broadcast_to(b[0], y[:, 0].shape), 0.0, "empty row 0")


@pytest.mark.parametrize("kind", KERNEL_KINDS)
def test_conv_float32(kind, rng):
    x, b, geom = conv_setup(CONV["groups2"], rng)
    fmt = make(kind, weight(rng, geom.weight_shape, 0.6).astype(np.float32))
    assert fmt.dtype == F32
    check_conv_format(fmt, x.astype(np.float32), b.astype(np.float32), geom, f"{kind} f32",
                      rtol=1e-5)


@pytest.mark.parametrize("kind", KERNEL_KINDS)
@pytest.mark.parametrize("case", ["basic", "depthwise"])
def test_conv_partial_backward(case, kind, rng):
    # The Net asks for dx without weight gradients (attacks) and the reverse (the first layer).
    x, b, geom = conv_setup(CONV[case], rng)
    fmt = make(kind, weight(rng, geom.weight_shape, 0.5))
    dy = rng.standard_normal((x.shape[0],) + geom.out_shape)
    dx, grads, db = conv2d_backward_format(dy, x, fmt, geom)
    dx_only, g_none, db_none = conv2d_backward_format(dy, None, fmt, geom, need_weight=False)
    assert g_none is None and db_none is None
    assert_close(dx_only, dx, TIGHT, f"{kind}: dx alone")
    dx_none, g_only, db_only = conv2d_backward_format(dy, x, fmt, geom, need_input=False)
    assert dx_none is None
    assert_grads(g_only, grads, f"{kind}: weight gradient alone")
    assert_close(db_only, db, TIGHT, f"{kind}: dbias alone")


@pytest.mark.parametrize("kind", KERNEL_KINDS)
def test_conv_empty_batch(kind, rng):
    x, b, geom = conv_setup(CONV["basic"], rng)
    fmt = make(kind, weight(rng, geom.weight_shape, 0.5))
    x0 = x[:0]
    y = conv2d_forward_format(x0, fmt, b, geom)
    assert y.shape == (0,) + geom.out_shape
    dx, grads, db = conv2d_backward_format(y, x0, fmt, geom)
    assert dx.shape == x0.shape and db.shape == b.shape and not db.any()
    for k, g in grads.items():
        assert g.shape == fmt.arrays()[k].shape and not g.any(), f"{kind}: d{k} of no examples"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["csr", "codebook", "sparse_codebook"])
def test_thread_count(kind, threads, rng):
    # Each thread owns whole examples (conv backward) or rows (linear) and its own partial sums.
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip("needs 2 Numba threads")
    x, b, geom = conv_setup(CONV[f"batch{MANY}"], rng)
    conv_fmt = make(kind, weight(rng, geom.weight_shape, 0.7))
    lin_fmt = make(kind, weight(rng, (130, 33), 0.7))
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        check_conv_format(conv_fmt, x, b, geom, f"{kind} on {threads} thread(s)")
        check_linear_format(lin_fmt, rng.standard_normal((MANY, 33)), None,
                            f"{kind} on {threads} thread(s)")
    finally:
        numba.set_num_threads(old)


def codebook_weight(rng, shape, bits, *, sparse):
    """Values from a table of 2**bits (sparse: 0.0 and 2**bits − 1 non-zero values), each used
    at least once (the weight must have ≥ 2**bits entries)."""
    k = 1 << bits
    table = np.concatenate([[0.0], levels(rng, k - 1)]) if sparse else levels(rng, k)
    size = int(np.prod(shape))
    idx = np.concatenate([np.arange(k), rng.integers(0, k, size - k)])
    if sparse:  # about half zeros
        idx[k:][rng.random(size - k) < 0.5] = 0
    return table[rng.permutation(idx)].reshape(shape), table


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("kind", ["codebook", "sparse_codebook"])
def test_conv_codebook_bits(kind, bits, rng):
    # groups4's weight (O, 2, 3, 3) holds 2**bits ≤ 128 values with O = 8; 256 need O = 32.
    O = 32 if bits == 8 else 8
    x, b, geom = conv_setup(("groups4", 2, 8, 6, 6, O, 3, 3, dict(groups=4, stride=(2, 1))), rng)
    shape = geom.weight_shape
    w, table = codebook_weight(rng, shape, bits, sparse=kind == "sparse_codebook")
    opts = dict(bits=bits) if kind == "codebook" else dict(code_bits=bits, gap_bits=4)
    fmt = make(kind, w, **opts)
    assert fmt.centroids.size == 1 << bits
    assert np.array_equal(fmt.to_dense(), w)  # storage round trip
    check_conv_format(fmt, x, b, geom, f"{kind} {bits} bits")


# Positions (row-major over the (6, 4·3·3 = 36) matrix) with long runs of zeros between them:
# rows 3 and 5 are empty, and gaps of 37, 108 and 47 need fillers for every gap width up to 5.
GAP_POSITIONS = [0, 1, 2, 40, 41, 150, 151, 152, 200, 215]


@pytest.mark.parametrize("gap_bits", range(1, 6))
def test_sparse_codebook_fillers(gap_bits, rng):
    x, b, geom = conv_setup(("gaps", 2, 4, 6, 6, 6, 3, 3, dict(padding=1)), rng)
    w = np.zeros(geom.weight_shape)
    w.flat[GAP_POSITIONS] = levels(rng, len(GAP_POSITIONS))
    fmt = SparseCodebookWeight.from_dense(w, code_bits=4, gap_bits=gap_bits)
    gaps = np.diff(GAP_POSITIONS, prepend=-1) - 1
    # A filler spans 2**gap_bits positions; a gap g needs g // 2**gap_bits of them.
    assert fmt.fillers() == int((gaps // (1 << gap_bits)).sum()) > 0
    assert fmt.count == len(GAP_POSITIONS) + fmt.fillers()
    assert fmt.nnz() == len(GAP_POSITIONS)
    codes, stream_gaps, positions = fmt.entries()
    assert stream_gaps.max() < 1 << gap_bits
    assert np.array_equal(sc_positions(stream_gaps), positions)
    assert np.array_equal(positions[codes != 0], GAP_POSITIONS)
    assert np.array_equal(fmt.to_dense(), w)  # storage round trip
    check_conv_format(fmt, x, b, geom, f"{gap_bits}-bit gaps")
    lin = SparseCodebookWeight.from_dense(w.reshape(6, 36), code_bits=4, gap_bits=gap_bits)
    check_linear_format(lin, rng.standard_normal((3, 36)), b, f"linear {gap_bits}-bit gaps")


def random_conv_format_case(draw, kind):
    groups = draw(st.sampled_from([1, 2, 3]), label="groups")
    C = groups * draw(st.integers(1, 3), label="C/groups")
    O = groups * draw(st.integers(1, 3), label="O/groups")
    kh, kw = draw(st.integers(1, 4), label="kh"), draw(st.integers(1, 4), label="kw")
    sh, sw = draw(st.integers(1, 3), label="sh"), draw(st.integers(1, 3), label="sw")
    ph, pw = draw(st.integers(0, 2), label="ph"), draw(st.integers(0, 2), label="pw")
    dh, dw = draw(st.integers(1, 2), label="dh"), draw(st.integers(1, 2), label="dw")
    H = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 9), label="H")
    W = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 9), label="W")
    N = draw(st.integers(1, MANY), label="N")
    sparsity = draw(st.sampled_from(SPARSITIES), label="sparsity")
    r = np.random.default_rng(draw(st.integers(0, 2 ** 16), label="seed"))
    x, b, geom = conv_setup(("random", N, C, H, W, O, kh, kw,
                             dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw),
                                  groups=groups)), r)
    check_conv_format(make(kind, weight(r, geom.weight_shape, sparsity)), x, b, geom,
                      f"{kind} random geometry")


@pytest.mark.parametrize("kind", ["csr", "codebook", "sparse_codebook"])
@FAST
@given(data=st.data())
def test_conv_format_random_geometry(kind, data):
    random_conv_format_case(data.draw, kind)


# ---------------------------------------------------------------------------------------------
# Inner product: every format against the dense kernels


def check_linear_format(fmt, x, b, what, rtol=TIGHT, direct=None):
    w = fmt.to_dense().reshape(fmt.rows, fmt.cols)
    b = None if b is None else b[:fmt.rows]
    y = linear_forward_format(x, fmt, b, direct=direct)
    assert y.dtype == x.dtype
    assert_close(y, linear_forward_dense(x, w, b), rtol, f"{what} forward")
    dy = np.random.default_rng(7).standard_normal(y.shape).astype(x.dtype)
    dx, grads, db = linear_backward_format(dy, x, fmt, direct=direct)
    dx_ref, dw_ref, db_ref = linear_backward_dense(dy, x, w)
    assert_close(dx, dx_ref, rtol, f"{what} dx")
    assert_close(db, db_ref, rtol, f"{what} dbias")
    want = reduce_ref(fmt, dw_ref)
    assert_grads(grads, want, what, rtol)
    assert_grads(fmt.reduce_dense_grad(dw_ref.reshape(fmt.shape)), want,
                 f"{what} reduce_dense_grad", rtol)
    return y, dx, grads


# (O, I): one block of rows; more rows than a chunk's minimum of 64 and a codebook block of 64.
LINEAR_SHAPES = [(7, 13), (130, 33)]


@pytest.mark.parametrize("sparsity", SPARSITIES, ids=lambda s: f"sparse{s:g}")
@pytest.mark.parametrize("kind", KERNEL_KINDS)
@pytest.mark.parametrize("N", [1, 64])
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_linear_format_matches_dense(shape, N, kind, sparsity, rng):
    w = weight(rng, shape, sparsity)
    fmt = make(kind, w)
    assert np.array_equal(fmt.to_dense(), w)  # storage round trip
    check_linear_format(fmt, rng.standard_normal((N, shape[1])), rng.standard_normal(shape[0]),
                        f"{kind} {shape} N={N}")


SPARSE_KINDS = ("csr", "sparse_codebook", "huffman")
# Rows of 301 columns: the direct walk reads whole groups of 8 entries, with a head and a tail.
WALK_SHAPE = (9, 301)


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "rows"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 1.0], ids=lambda s: f"sparse{s:g}")
@pytest.mark.parametrize("kind", SPARSE_KINDS)
@pytest.mark.parametrize("N", [1, 3])
def test_linear_sparse_kernels_either_side_of_the_crossover(N, kind, sparsity, direct, rng):
    # The direct walk and the row kernel, each forced at a batch on either side of
    # DIRECT_MAX_BATCH, against the dense kernels and NumPy float64.
    w = weight(rng, WALK_SHAPE, sparsity)
    fmt = make(kind, w)
    x, b = rng.standard_normal((N, WALK_SHAPE[1])), rng.standard_normal(WALK_SHAPE[0])
    y, _, _ = check_linear_format(fmt, x, b, f"{kind} N={N} direct={direct}", direct=direct)
    assert_close(y, x @ w.T + b, TIGHT, f"{kind} N={N} direct={direct} vs NumPy")


@pytest.mark.parametrize("gap_bits", range(1, 6))
@pytest.mark.parametrize("kind", ["sparse_codebook", "huffman"])
def test_linear_direct_walk_over_fillers(kind, gap_bits, rng):
    # Long runs of zeros: fillers (code 0) inside the walk's 8-entry groups, empty rows.
    w = np.zeros((6, 36))
    w.flat[GAP_POSITIONS] = levels(rng, len(GAP_POSITIONS))
    fmt = make(kind, w, code_bits=4, gap_bits=gap_bits)
    x, b = rng.standard_normal((1, 36)), rng.standard_normal(6)
    y, _, _ = check_linear_format(fmt, x, b, f"{kind} {gap_bits}-bit gaps", direct=True)
    assert_close(y, x @ w.T + b, TIGHT, f"{kind} {gap_bits}-bit gaps vs NumPy")


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("K", [36, 37])
def test_codebook_rows_decode_float32(K, bits, rng):
    # The block decoder on float32 values, where codes of up to PAIR_BITS bits are decoded two
    # at a time through the pair table: every block of rows (odd starts, odd widths, a head and
    # a tail around the 8-code groups) against to_dense, and the layer against float64.
    from robustcnn.engine.formats.base import weight_rows

    w = codebook_weight(rng, (9, K), bits, sparse=False)[0].astype(F32)
    fmt = CodebookWeight.from_dense(w, bits, dtype=F32)
    dense = fmt.to_dense()
    scratch = np.empty((9, K), dtype=F32)
    for lo, hi in ((0, 9), (1, 4), (3, 8), (8, 9)):
        assert_close(weight_rows(fmt.operand(), lo, hi, scratch).astype(F64),
                     dense[lo:hi].astype(F64), 0.0, f"{bits}-bit rows {lo}..{hi}")
    x = rng.standard_normal((8, K)).astype(F32)
    assert_close(linear_forward_format(x, fmt, None).astype(F64),
                 x.astype(F64) @ dense.astype(F64).T, 1e-5, f"{bits}-bit layer vs float64")


def test_sparse_codebook_execution_entries():
    # The kernels' entries: code in the top byte, the column in the row below it; uint32 while
    # every column fits 24 bits, uint64 beyond (a row of 2^24 + 1 columns).
    codes, positions = np.array([3, 0, 255]), np.array([5, 2 * 7 + 6, 3 * 7])
    e = execution_entries(codes, positions, 7)
    assert e.dtype == np.uint32 and list(e) == [3 << 24 | 5, 6, 255 << 24]
    wide = (1 << 24) + 1
    e = execution_entries(codes, np.array([1 << 24, wide + 2, 3 * wide]), wide)
    assert e.dtype == np.uint64 and list(e) == [3 << 56 | 1 << 24, 2, 255 << 56]


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "rows"])
def test_linear_sparse_codebook_uint64_entries(direct, rng):
    # The uint64 layout (rows wider than 2^24 columns) through the same kernels, on a small
    # weight whose entries are rebuilt that way.
    w = weight(rng, WALK_SHAPE, 0.7)
    fmt = make("sparse_codebook", w)
    codes, _, positions = fmt.entries()
    fmt.entries_layout = ((codes.astype(np.uint64) << np.uint64(56))
                          | (positions % fmt.cols).astype(np.uint64))
    x, b = rng.standard_normal((3, WALK_SHAPE[1])), rng.standard_normal(WALK_SHAPE[0])
    y, _, _ = check_linear_format(fmt, x, b, f"uint64 entries direct={direct}", direct=direct)
    assert_close(y, x @ w.T + b, TIGHT, f"uint64 entries direct={direct} vs NumPy")


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "rows"])
@pytest.mark.parametrize("kind", SPARSE_KINDS)
def test_linear_sparse_backward_finite_differences(kind, direct, rng):
    # dx and the stored values' gradient of both sparse kernels against central differences of
    # Σ dy · y (codebooks: centroid 0 is the fixed zero, so only centroids 1.. vary).
    fmt = make(kind, weight(rng, WALK_SHAPE, 0.7))
    key = fmt.trainable[0]
    skip = 1 if key == "centroids" else 0
    fixed = fmt.arrays()[key][:skip]

    def forward(x, values):
        arrays = dict(fmt.arrays(), **{key: np.concatenate([fixed, values])})
        again = type(fmt).from_arrays(fmt.shape, arrays, fmt.options(), dtype=np.float64)
        return linear_forward_format(x, again, None, direct=direct)

    x = rng.standard_normal((2, WALK_SHAPE[1]))
    dy = rng.standard_normal((2, WALK_SHAPE[0]))
    dx, grads, _ = linear_backward_format(dy, x, fmt, direct=direct)
    check_gradients(forward, [x, fmt.arrays()[key][skip:].copy()], dy,
                    (dx, grads[key][skip:]), wrt=(0, 1), what=f"{kind} direct={direct}")


@pytest.mark.parametrize("kind", KERNEL_KINDS)
def test_linear_empty_rows_and_columns(kind, rng):
    w = empty_rows_and_columns(rng, (130, 33))
    fmt = make(kind, w)
    y, dx, _ = check_linear_format(fmt, rng.standard_normal((5, 33)), None, kind)
    assert not y[:, 0].any() and not y[:, 2].any()  # empty rows, no bias: exactly 0
    assert not dx[:, ::3].any()  # empty columns get no input gradient


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("kind", ["codebook", "sparse_codebook"])
def test_linear_codebook_bits(kind, bits, rng):
    w, _ = codebook_weight(rng, (130, 33), bits, sparse=kind == "sparse_codebook")
    opts = dict(bits=bits) if kind == "codebook" else dict(code_bits=bits, gap_bits=5)
    fmt = make(kind, w, **opts)
    assert fmt.centroids.size == 1 << bits
    assert np.array_equal(fmt.to_dense(), w)  # storage round trip
    check_linear_format(fmt, rng.standard_normal((4, 33)), rng.standard_normal(130),
                        f"{kind} {bits} bits")


@pytest.mark.parametrize("kind", KERNEL_KINDS)
def test_linear_float32(kind, rng):
    fmt = make(kind, weight(rng, (130, 33), 0.6).astype(np.float32))
    check_linear_format(fmt, rng.standard_normal((5, 33)).astype(np.float32),
                        rng.standard_normal(130).astype(np.float32), f"{kind} f32", rtol=1e-5)


@pytest.mark.parametrize("kind", KERNEL_KINDS)
def test_linear_partial_backward(kind, rng):
    fmt = make(kind, weight(rng, (130, 33), 0.5))
    x, dy = rng.standard_normal((3, 33)), rng.standard_normal((3, 130))
    dx, grads, db = linear_backward_format(dy, x, fmt)
    dx_only, g_none, db_none = linear_backward_format(dy, x, fmt, need_weight=False)
    assert g_none is None and db_none is None
    assert_close(dx_only, dx, TIGHT, f"{kind}: dx alone")
    dx_none, g_only, db_only = linear_backward_format(dy, x, fmt, need_input=False)
    assert dx_none is None
    assert_grads(g_only, grads, f"{kind}: weight gradient alone")
    assert_close(db_only, db, TIGHT, f"{kind}: dbias alone")


# Run in a child process: a kernel that reads x=None corrupts the heap (and aborts) instead of
# raising. One child for every format (a child's start-up costs more than its checks); each
# kind prints its own verdict, so one that aborts leaves the others' lines and fails alone.
X_NONE_SCRIPT = """
import sys
import numpy as np
from robustcnn.engine.formats import FORMATS
from robustcnn.engine.linear import linear_backward_format
for kind, options in {cases!r}:
    rng = np.random.default_rng(0)
    w = rng.choice(np.linspace(-1, 1, 15), size=(130, 33)) * (rng.random((130, 33)) < 0.5)
    fmt = FORMATS[kind].from_dense(w, **options)
    dy = rng.standard_normal((3, 130))
    dx, grads, db = linear_backward_format(dy, None, fmt, need_weight=False)
    ok = grads is None and db is None and \
        np.abs(dx - dy @ w).max() <= 1e-12 * np.abs(dy @ w).max()
    print(kind, "ok" if ok else "wrong", flush=True)
"""


@pytest.fixture(scope="module")
def x_none_verdicts():
    """{kind: "ok" | "wrong"} from one child process, with its exit code and stderr."""
    script = X_NONE_SCRIPT.format(cases=[(k, OPTIONS[k]) for k in KERNEL_KINDS])
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    verdicts = dict(line.split() for line in proc.stdout.splitlines() if line.strip())
    return verdicts, proc.returncode, proc.stderr[-500:]


@pytest.mark.parametrize("kind", KERNEL_KINDS)
def test_linear_input_gradient_without_input(kind, x_none_verdicts):
    # linear_backward_format accepts x=None when only dx is wanted (as linear_backward_dense).
    verdicts, code, stderr = x_none_verdicts
    assert verdicts.get(kind) == "ok", f"{kind}: {verdicts.get(kind, 'no verdict')}, child " \
                                       f"exit code {code}: {stderr}"


@pytest.mark.parametrize("kind", KERNEL_KINDS)
def test_linear_empty_batch(kind, rng):
    fmt = make(kind, weight(rng, (7, 13), 0.5))
    x0 = np.zeros((0, 13))
    y = linear_forward_format(x0, fmt, None)
    assert y.shape == (0, 7)
    dx, grads, db = linear_backward_format(y, x0, fmt)
    assert dx.shape == x0.shape and db.shape == (7,) and not db.any()
    for k, g in grads.items():
        assert g.shape == fmt.arrays()[k].shape and not g.any(), f"{kind}: d{k} of no examples"


# ---------------------------------------------------------------------------------------------
# Invariants: storage round trips, sizes, index dtypes

SHAPES = [(5, 7), (4, 3, 3, 3), (1, 1), (3, 1, 1, 1)]


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 1.0], ids=lambda s: f"sparse{s:g}")
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", KERNEL_KINDS)
@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
def test_round_trip_and_state(dtype, kind, shape, sparsity, rng):
    # Float equality is right here: storage round trips must return the very same values.
    w = weight(rng, shape, sparsity).astype(dtype)
    fmt = make(kind, w)
    back = fmt.to_dense()
    assert back.shape == w.shape and back.dtype == dtype and np.array_equal(back, w)
    assert fmt.dtype == dtype and fmt.shape == shape
    assert fmt.nnz() == np.count_nonzero(w)
    assert tuple(fmt.arrays()) == fmt.array_names
    assert set(fmt.trainable) <= set(fmt.array_names) and set(fmt.decay) <= set(fmt.trainable)
    # from_arrays(arrays(), options()) is how a state dict is loaded: the same weight comes back.
    again = type(fmt).from_arrays(shape, fmt.arrays(), fmt.options(), dtype=dtype)
    assert np.array_equal(again.to_dense(), w)
    for k, a in again.arrays().items():
        assert a.dtype == fmt.arrays()[k].dtype, f"{kind}/{k}: {a.dtype} after from_arrays"
        assert a is not fmt.arrays()[k], f"{kind}/{k}: from_arrays must copy"
    # astype keeps the structure and casts the values.
    other = F32 if dtype == F64 else F64
    cast = fmt.astype(other)
    assert cast.dtype == other and np.array_equal(cast.to_dense(), w.astype(other))
    for k, a in cast.arrays().items():
        want = fmt.arrays()[k]
        assert a.dtype == (other if k in fmt.trainable else want.dtype)
        if k not in fmt.trainable:
            assert np.array_equal(a, want), f"{kind}/{k} changed by astype"


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=30, deadline=None, derandomize=True)
@given(data=st.data())
def test_round_trip_random(kind, data):
    # Any shape, any sparsity, values from up to 15 arbitrary distinct floats: exact.
    rows = data.draw(st.integers(1, 6), label="rows")
    cols = data.draw(st.integers(1, 40), label="cols")
    values = data.draw(st.lists(st.floats(-1e6, 1e6, allow_subnormal=False).filter(bool),
                                min_size=1, max_size=15, unique=True), label="values")
    r = np.random.default_rng(data.draw(st.integers(0, 2 ** 16), label="seed"))
    w = weight(r, (rows, cols), data.draw(st.floats(0, 1), label="sparsity"), values)
    fmt = make(kind, w)
    assert np.array_equal(fmt.to_dense(), w)  # storage round trip: exact
    assert fmt.nnz() == np.count_nonzero(w)


@pytest.mark.parametrize("kind", ["codebook", "sparse_codebook"])
def test_round_trip_adjacent_floats(kind):
    # 1 + ε and 1 + 2ε: their midpoint is halfway between two floats and rounds (to even) to
    # 1 + 2ε itself, so searchsorted(mid, 1 + 2ε, side="left") picks code 0.
    a = 1.0 + np.finfo(np.float64).eps
    w = np.array([[a, np.nextafter(a, 2.0), a, 0.5]])
    fmt = make(kind, w, **(dict(bits=2) if kind == "codebook" else dict(code_bits=2, gap_bits=1)))
    assert np.array_equal(fmt.to_dense(), w)


HEADER = {"dense": 8, "csr": 8, "codebook": 9, "sparse_codebook": 14}


def expected_nbytes(fmt, w):
    """Stored bytes by hand from the weight and the format's settings."""
    nnz, n, O = np.count_nonzero(w), w.size, w.shape[0]
    # Values are stored as float32 whatever the net computes in.
    if fmt.kind == "dense":
        return {"values": n * 4, "header": HEADER["dense"]}
    if fmt.kind == "csr":
        return {"values": nnz * 4, "indices": nnz * fmt.indices.itemsize,
                "indptr": (O + 1) * fmt.indptr.itemsize, "header": HEADER["csr"]}
    if fmt.kind == "codebook":
        return {"codes": math.ceil(n * fmt.bits / 8), "centroids": fmt.centroids.size * 4,
                "header": HEADER["codebook"]}
    return {"codes": math.ceil(fmt.count * fmt.code_bits / 8),
            "gaps": math.ceil(fmt.count * fmt.gap_bits / 8),
            "centroids": fmt.centroids.size * 4, "header": HEADER["sparse_codebook"]}


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 1.0], ids=lambda s: f"sparse{s:g}")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
def test_stored_sizes(dtype, kind, sparsity, rng):
    w = weight(rng, (20, 3, 5, 5), sparsity).astype(dtype)
    fmt = make(kind, w)
    parts = fmt.stored_nbytes()
    assert parts == expected_nbytes(fmt, w)
    assert fmt.stored_bytes() == sum(parts.values())
    assert fmt.ratio() == pytest.approx(4 * w.size / fmt.stored_bytes(), rel=1e-15)
    if kind == "csr":
        assert fmt.indices.dtype == np.int32 and fmt.indptr.dtype == np.int32
    if kind == "sparse_codebook":
        assert fmt.count == np.count_nonzero(w) + fmt.fillers()
        # the row index and one uint32 execution entry (code, column) per stored entry
        assert fmt.runtime_nbytes() == (w.shape[0] + 1) * 8 + w.shape[0] * 8 + 4 * fmt.count
    assert str(fmt.stored_bytes()) in repr(fmt).replace(",", "") and kind in fmt.summary()


def test_stored_sizes_by_hand():
    # A (2, 4) weight [[0 1.5 0 0] [−2 0 0 1.5]]: sizes written out.
    w = np.array([[0, 1.5, 0, 0], [-2, 0, 0, 1.5]], dtype=np.float32)
    csr = CSRWeight.from_dense(w)
    assert csr.stored_nbytes() == {"values": 3 * 4, "indices": 3 * 4, "indptr": 3 * 4, "header": 8}
    cb = CodebookWeight.from_dense(w, bits=2)  # 8 codes of 2 bits = 2 bytes; 3 centroids
    assert cb.stored_nbytes() == {"codes": 2, "centroids": 12, "header": 9}
    assert cb.ratio() == pytest.approx(32 / 23, rel=1e-15)
    sc = SparseCodebookWeight.from_dense(w, code_bits=2, gap_bits=1)
    # gaps 1, 2, 2 in 1 bit: 1 → (1); 2 → filler + (0); 2 → filler + (0): 5 entries
    assert sc.fillers() == 2 and sc.count == 5
    assert sc.stored_nbytes() == {"codes": 2, "gaps": 1, "centroids": 12, "header": 14}


def test_index_dtype():
    top = np.iinfo(np.int32).max
    assert _jit.index_dtype(0) == np.int32
    assert _jit.index_dtype(top) == np.int32
    assert _jit.index_dtype(top + 1) == np.int64  # a column count past 2**31 − 1
    assert _jit.index_dtype(5, top + 1) == np.int64  # any size too large widens
    assert _jit.index_dtype(2 ** 40, 3) == np.int64


def test_csr_picks_int64_for_huge_column_counts(monkeypatch):
    # A weight with more than 2**31 − 1 columns cannot be allocated here; from_dense asks
    # index_dtype about the column count, so a threshold lowered to 10 shows which it asks.
    monkeypatch.setattr(_jit, "_INT32_MAX", 10)
    narrow = CSRWeight.from_dense(np.eye(3, 10))  # 10 columns, 3 non-zeros: fit
    assert narrow.indices.dtype == np.int32 and narrow.indptr.dtype == np.int32
    wide = CSRWeight.from_dense(np.eye(3, 11))  # 11 columns: indices widen, indptr does not
    assert wide.indices.dtype == np.int64 and wide.indptr.dtype == np.int32


@pytest.mark.parametrize("dtype", [np.int64, np.uint32, np.int16])
def test_csr_keeps_given_index_dtypes(dtype, rng):
    # Any integer width is kept as given (int64 above all: never narrowed to int32).
    w = weight(rng, (6, 3, 3, 3), 0.7)
    ref = CSRWeight.from_dense(w)
    indices, indptr = ref.indices.astype(dtype), ref.indptr.astype(dtype)
    for fmt in (CSRWeight(w.shape, ref.data.copy(), indices, indptr),
                CSRWeight.from_arrays(w.shape, {"data": ref.data, "indices": indices,
                                                "indptr": indptr}, {}, dtype=F64),
                CSRWeight(w.shape, ref.data.copy(), indices, indptr).astype(np.float32)):
        assert fmt.indices.dtype == dtype and fmt.indptr.dtype == dtype  # never narrowed
        assert np.array_equal(fmt.to_dense(), w.astype(fmt.dtype))
    if dtype != np.int64:
        return
    # The kernels compute on int64 indices (compiled for each index width they meet) as on int32.
    x, b, geom = conv_setup(("int64", 2, 3, 6, 6, 6, 3, 3, dict(padding=1)), rng)
    y, _, _ = check_conv_format(CSRWeight(w.shape, ref.data.copy(), indices, indptr), x, b, geom,
                                "csr with int64 indices")
    assert_close(y, conv2d_forward_format(x, ref, b, geom), TIGHT, "int64 vs int32 indices")
    check_linear_format(CSRWeight((6, 27), ref.data.copy(), indices, indptr),
                        rng.standard_normal((3, 27)), None, "csr with int64 indices")


def test_csr_scipy_round_trip(rng):
    # A COO matrix with duplicates and unsorted columns: from_scipy sums and sorts them.
    rows = np.array([2, 0, 2, 0, 3, 2])
    cols = np.array([5, 1, 0, 1, 7, 5])
    vals = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    m = scipy.sparse.coo_matrix((vals, (rows, cols)), shape=(4, 9))
    fmt = CSRWeight.from_scipy(m, dtype=np.float64)
    assert fmt.shape == (4, 9)
    assert_close(fmt.to_dense(), m.toarray(), 0.0, "from_scipy")
    assert np.array_equal(fmt.indices, [1, 0, 5, 7]) and np.array_equal(fmt.indptr, [0, 1, 1, 3, 4])
    back = fmt.to_scipy()
    assert isinstance(back, scipy.sparse.csr_matrix) and back.shape == (4, 9)
    assert_close(back.toarray(), fmt.to_dense(), 0.0, "to_scipy")
    # A conv weight: the matrix's columns are the flattened receptive field.
    w = weight(rng, (4, 2, 3, 3), 0.6)
    conv = CSRWeight.from_scipy(scipy.sparse.csr_matrix(w.reshape(4, -1)), shape=w.shape,
                                dtype=np.float64)
    assert conv.shape == w.shape and np.array_equal(conv.to_dense(), w)
    assert np.array_equal(conv.to_scipy().toarray(), w.reshape(4, -1))
    assert CSRWeight.from_scipy(m).dtype == F32  # the default dtype


def test_csr_from_scipy_rejects_a_shape_of_another_size(rng):
    m = scipy.sparse.csr_matrix(weight(rng, (4, 27), 0.5))
    with pytest.raises(ValueError, match="27"):
        CSRWeight.from_scipy(m, shape=(4, 3, 3, 4))  # 36 columns, not 27


def test_codebook_code_array_and_entries(rng):
    w, table = codebook_weight(rng, (6, 40), 3, sparse=False)
    cb = CodebookWeight.from_dense(w, bits=3)
    codes = cb.code_array()
    assert codes.dtype == np.uint8 and codes.shape == (w.size,)
    assert np.array_equal(cb.centroids[codes], w.reshape(-1))
    w, table = codebook_weight(rng, (6, 40), 3, sparse=True)
    sc = SparseCodebookWeight.from_dense(w, code_bits=3, gap_bits=2)
    codes, gaps, positions = sc.entries()
    assert (np.diff(positions) > 0).all() and positions[-1] < w.size
    assert np.array_equal(sc.centroids[codes], w.reshape(-1)[positions])
    assert sc.centroids[0] == 0.0 and not w.reshape(-1)[np.setdiff1d(np.arange(w.size),
                                                                     positions)].any()


def test_given_centroids_quantize_to_the_nearest(rng):
    w = np.array([[-0.9, -0.2, 0.1, 0.45], [0.55, 0.8, 2.0, -5.0]])
    cb = CodebookWeight.from_dense(w, bits=2, centroids=np.array([0.5, -1.0, 0.0, 1.0]))
    assert np.array_equal(cb.code_array(), [1, 2, 2, 0, 0, 3, 3, 1])
    sc = SparseCodebookWeight.from_dense(w, code_bits=2, gap_bits=2,
                                         centroids=np.array([0.0, -1.0, 0.5, 1.0]))
    # Non-zeros map to the nearest non-zero centroid (-0.2 is nearer 0.5 than −1), never to 0.
    assert np.array_equal(sc.entries()[0], [1, 2, 2, 2, 2, 3, 3, 1])


# ---------------------------------------------------------------------------------------------
# Bit packing


@settings(max_examples=60, deadline=None, derandomize=True)
@given(width=st.integers(1, 8), data=st.data())
def test_pack_bits(width, data):
    values = np.array(data.draw(st.lists(st.integers(0, (1 << width) - 1), max_size=70)),
                      dtype=np.int64)
    packed = pack_bits(values, width)
    assert packed.dtype == np.uint8 and packed.size == packed_nbytes(values.size, width)
    assert packed.size == math.ceil(values.size * width / 8)
    # LSB first: bit b of value i is bit i·width + b of the little-endian stream.
    bits = np.unpackbits(packed, bitorder="little")
    for i, v in enumerate(values):
        assert [int(bits[i * width + b]) for b in range(width)] == \
               [(int(v) >> b) & 1 for b in range(width)], f"value {i}"
    assert not bits[values.size * width:].any()  # the padding bits are zero
    assert np.array_equal(unpack_bits(packed, values.size, width), values)
    assert [read_packed(packed, i, width) for i in range(values.size)] == values.tolist()


@pytest.mark.parametrize("width,values", [(0, [0]), (9, [0]), (3, [8]), (1, [-1]), (8, [256])])
def test_pack_bits_rejects(width, values):
    with pytest.raises(ValueError):
        pack_bits(np.array(values), width)


def test_unpack_bits_needs_enough_bytes():
    with pytest.raises(ValueError, match="fewer than 6 values of 3 bits"):
        unpack_bits(np.zeros(2, np.uint8), 6, 3)


# ---------------------------------------------------------------------------------------------
# Malformed structures: rejected with a message that starts with where (``at``)


def csr_arrays(rng):
    w = np.zeros((4, 6))
    w[0, [1, 3, 4]] = [1.0, 2.0, 3.0]
    w[2, [0, 5]] = [4.0, 5.0]
    w[3, 2] = 6.0
    a = {k: v.copy() for k, v in CSRWeight.from_dense(w).arrays().items()}
    return (4, 6), a  # indptr [0 3 3 5 6], indices [1 3 4 0 5 2]


def _set(name, index, value):
    def tamper(a):
        a[name][index] = value
    return tamper


def _replace(name, fn):
    def tamper(a):
        a[name] = fn(a[name])
    return tamper


CSR_BAD = [
    ("index_past_columns", _set("indices", 2, 6), ValueError, "column index lies outside"),
    ("negative_index", _set("indices", 0, -1), ValueError, "column index lies outside"),
    ("indptr_decreases", _set("indptr", 2, 2), ValueError, "never decrease"),
    ("indptr_not_from_0", _replace("indptr", lambda p: p + 1), ValueError, "start at 0"),
    ("indptr_too_short", _replace("indptr", lambda p: p[:-1]), ValueError,
     "indptr has 4 entries, expected rows \\+ 1 = 5"),
    ("indptr_too_long", _replace("indptr", lambda p: np.append(p, 6)), ValueError,
     "expected rows \\+ 1 = 5"),
    ("unsorted_columns", _replace("indices", lambda i: i[[1, 0, 2, 3, 4, 5]]), ValueError,
     "increase within each row"),
    ("duplicate_columns", _set("indices", 1, 1), ValueError, "increase within each row"),
    ("unsorted_row_2", _set("indices", 3, 5), ValueError, "increase within each row"),
    ("fewer_values", _replace("data", lambda d: d[:-1]), ValueError,
     "indptr ends at 6 but there are 6 indices and 5 values"),
    ("more_indices", _replace("indices", lambda i: np.append(i, 1)), ValueError,
     "7 indices and 6 values"),
    ("float_indices", _replace("indices", lambda i: i.astype(float)), TypeError,
     "indices has dtype float64"),
    ("2d_indptr", _replace("indptr", lambda p: p[None]), ValueError, "indptr must have 1 axis"),
    ("nan_value", _set("data", 0, np.nan), ValueError, "data has non-finite"),
    ("int_values", _replace("data", lambda d: d.astype(np.int64)), TypeError,
     "data has dtype int64"),
]


@pytest.mark.parametrize("tamper,error,match", [c[1:] for c in CSR_BAD],
                         ids=[c[0] for c in CSR_BAD])
def test_csr_rejects(tamper, error, match, rng):
    shape, arrays = csr_arrays(rng)
    CSRWeight.from_arrays(shape, arrays, {}, at=LAYER)  # untampered: fine
    tamper(arrays)
    with pytest.raises(error, match=match) as e:
        CSRWeight.from_arrays(shape, arrays, {}, at=LAYER)
    assert str(e.value).startswith(f"{LAYER}: "), str(e.value)


def codebook_arrays():
    w = np.array([[0.5, -1.0, 0.5], [2.0, 0.0, -1.0]])  # 4 centroids, 2-bit codes: 2 bytes
    fmt = CodebookWeight.from_dense(w, bits=2)
    return (2, 3), {k: v.copy() for k, v in fmt.arrays().items()}, fmt.options()


def _options(**changes):
    def tamper(a, o):
        o.update(changes)
    return tamper


def _arrays(tamper_arrays):
    def tamper(a, o):
        tamper_arrays(a)
    return tamper


CODEBOOK_BAD = [
    ("code_past_codebook", _arrays(_replace("centroids", lambda c: c[:3])), ValueError,
     "a code is >= the codebook size 3"),
    ("packed_too_short", _arrays(_replace("codes", lambda c: c[:1])), ValueError,
     "packed codes must be 2 uint8 bytes for 6 2-bit codes"),
    ("packed_too_long", _arrays(_replace("codes", lambda c: np.append(c, 0))), ValueError,
     "packed codes must be 2 uint8 bytes"),
    ("bits_0", _options(bits=0), ValueError, "bits must be an integer 1..8, got 0"),
    ("bits_9", _options(bits=9), ValueError, "bits must be an integer 1..8, got 9"),
    ("too_many_centroids", _arrays(_replace("centroids", lambda c: np.append(c, 3.0))),
     ValueError, "5 centroids do not fit 2-bit codes"),
    ("no_centroids", _arrays(_replace("centroids", lambda c: c[:0])), ValueError,
     "0 centroids do not fit"),
    ("nan_centroid", _arrays(_set("centroids", 1, np.nan)), ValueError, "non-finite"),
    ("float_codes", _arrays(_replace("codes", lambda c: c.astype(float))), TypeError,
     "codes has dtype float64"),
]


@pytest.mark.parametrize("tamper,error,match", [c[1:] for c in CODEBOOK_BAD],
                         ids=[c[0] for c in CODEBOOK_BAD])
def test_codebook_rejects(tamper, error, match):
    shape, arrays, options = codebook_arrays()
    CodebookWeight.from_arrays(shape, arrays, options, at=LAYER)  # untampered: fine
    tamper(arrays, options)
    with pytest.raises(error, match=match) as e:
        CodebookWeight.from_arrays(shape, arrays, options, at=LAYER)
    assert str(e.value).startswith(f"{LAYER}: "), str(e.value)


@pytest.mark.parametrize("kind", ["codebook", "sparse_codebook"])
def test_packed_bytes_out_of_range_are_rejected(kind):
    w = np.array([[0.5, -1.0, 0.0], [2.0, 0.0, -1.0]])
    fmt = make(kind, w, **(dict(bits=2) if kind == "codebook" else dict(code_bits=2, gap_bits=2)))
    arrays = {k: v.copy() for k, v in fmt.arrays().items()}
    arrays["codes"] = arrays["codes"].astype(np.int32) + 256  # not a byte any more
    with pytest.raises(ValueError, match=re.escape(LAYER)):
        type(fmt).from_arrays(w.shape, arrays, fmt.options(), at=LAYER)


def sparse_codebook_arrays():
    # Row-major (3, 5): non-zeros at 1, 2, 9, 13; 2-bit gaps (the gap of 6 needs a filler).
    w = np.zeros((3, 5))
    w.flat[[1, 2, 9, 13]] = [0.5, -1.0, 0.5, 2.0]
    fmt = SparseCodebookWeight.from_dense(w, code_bits=2, gap_bits=2)
    assert fmt.fillers() == 1 and fmt.count == 5
    return (3, 5), {k: v.copy() for k, v in fmt.arrays().items()}, fmt.options()


SPARSE_CODEBOOK_BAD = [
    ("centroid0_not_zero", _arrays(_set("centroids", 0, 0.25)), ValueError,
     r"centroid 0 is \S*0\.25\S*; code 0 marks zeros and fillers, so it must be 0\.0"),
    ("entries_past_the_end", _arrays(_replace("gaps", lambda g: np.full_like(g, 0xFF))), ValueError,
     r"the entries run to position \d+, past the 15 weights of shape \(3, 5\)"),
    ("more_entries", _arrays(_replace("count", lambda c: c + 4)), ValueError,
     "codes must be 3 uint8 bytes for 9 entries"),
    ("negative_count", _arrays(_replace("count", lambda c: -c)), ValueError,
     "count must hold one non-negative entry count"),
    ("two_counts", _arrays(_replace("count", lambda c: np.append(c, c))), ValueError,
     "count must hold one non-negative entry count"),
    ("float_count", _arrays(_replace("count", lambda c: c.astype(float))), TypeError,
     "count has dtype float64"),
    ("code_past_codebook", _arrays(_replace("centroids", lambda c: c[:3])), ValueError,
     "a code is >= the codebook size 3"),
    ("codes_too_short", _arrays(_replace("codes", lambda c: c[:1])), ValueError,
     r"codes must be 2 uint8 bytes for 5 entries of 2 bits, got uint8 \(1,\)"),
    ("gaps_too_long", _arrays(_replace("gaps", lambda g: np.append(g, 0))), ValueError,
     r"gaps must be 2 uint8 bytes for 5 entries of 2 bits, got uint8 \(3,\)"),
    ("code_bits_0", _options(code_bits=0), ValueError, "code_bits must be an integer 1..8, got 0"),
    ("code_bits_9", _options(code_bits=9), ValueError, "code_bits must be an integer 1..8, got 9"),
    ("gap_bits_9", _options(gap_bits=9), ValueError, "gap_bits must be an integer 1..8, got 9"),
    ("too_many_centroids", _arrays(_replace("centroids", lambda c: np.append(c, 3.0))),
     ValueError, "5 centroids do not fit 2-bit codes"),
    ("inf_centroid", _arrays(_set("centroids", 2, np.inf)), ValueError, "non-finite"),
    ("2d_gaps", _arrays(_replace("gaps", lambda g: g[None])), ValueError, "gaps must have 1 axis"),
]


@pytest.mark.parametrize("tamper,error,match", [c[1:] for c in SPARSE_CODEBOOK_BAD],
                         ids=[c[0] for c in SPARSE_CODEBOOK_BAD])
def test_sparse_codebook_rejects(tamper, error, match):
    shape, arrays, options = sparse_codebook_arrays()
    SparseCodebookWeight.from_arrays(shape, arrays, options, at=LAYER)  # untampered: fine
    tamper(arrays, options)
    with pytest.raises(error, match=match) as e:
        SparseCodebookWeight.from_arrays(shape, arrays, options, at=LAYER)
    assert str(e.value).startswith(f"{LAYER}: "), str(e.value)


def test_sparse_codebook_from_entries():
    # The (3, 5) weight of sparse_codebook_arrays, written as a Deep Compression stream.
    fmt = SparseCodebookWeight.from_entries((3, 5), [1, 2, 0, 1, 3], [1, 0, 3, 2, 4],
                                            [0.0, 0.5, -1.0, 2.0], 2, 3, dtype=np.float64)
    want = np.zeros(15)
    want[[1, 2, 9, 14]] = [0.5, -1.0, 0.5, 2.0]
    assert np.array_equal(fmt.to_dense().reshape(-1), want)  # storage round trip
    assert fmt.fillers() == 1
    with pytest.raises(ValueError, match=f"^{re.escape(LAYER)}: 3 codes but 2 gaps"):
        SparseCodebookWeight.from_entries((3, 5), [1, 2, 1], [0, 0], [0.0, 1.0], 2, 2, at=LAYER)
    with pytest.raises(ValueError, match="centroid 0 must be 0.0"):
        SparseCodebookWeight.from_dense(want.reshape(3, 5), centroids=[0.5, 1.0])


def test_dense_rejects_wrong_shape_and_values():
    with pytest.raises(ValueError, match=rf"^{re.escape(LAYER)}: "
                                         r"weight has shape \(2, 3\), the layer expects \(3, 2\)"):
        DenseWeight.from_arrays((3, 2), {"weight": np.zeros((2, 3))}, at=LAYER)
    with pytest.raises(ValueError, match="weight has non-finite"):
        DenseWeight.from_arrays((1, 2), {"weight": np.array([[0.0, np.inf]])}, at=LAYER)
