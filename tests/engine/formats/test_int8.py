"""engine/formats/int8.py and the int8 kernels of engine/quantized.py: the int8 format against the
dense kernels on its decoded weight (integer inputs take the integer kernel, others the float
path), the vector tile against NumPy's int64 products (AVX2 and portable), the 8-bit input
detection, the int32 bound, Vanhoucke et al.'s quantizer, and malformed structures."""

import numpy as np
import pytest
from format_checks import (CONV, CONV_CASES, LINEAR_SHAPES, MANY, TIGHT, check_conv_format,
                           check_linear_format, conv_setup)
from helpers import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from robustcnn.engine import quantized
from robustcnn.engine.formats import FORMATS, Int8Weight
from robustcnn.engine.formats.int8 import channel_scales

LAYER = "conv2 (Convolution)"
ACTIVATIONS = {"uint8": (0, 255), "int8": (-127, 127), "float": None}


def int8_reduce_ref(fmt, dweight):
    """dL/dscales[o] = Σ_k dL/dW[o, k] · codes[o, k], row by row."""
    d = np.asarray(dweight, dtype=np.float64).reshape(fmt.rows, fmt.cols)
    codes = fmt.codes.astype(np.int64).reshape(fmt.rows, fmt.cols)
    return {"scales": np.array([float(d[o] @ codes[o]) for o in range(fmt.rows)])}


def int8_weight(rng, shape, dtype=np.float64):
    """An int8 format with random codes (every value of −127..127 possible, some rows with
    zeros) and scales."""
    codes = rng.integers(-127, 128, size=int(np.prod(shape)))
    codes[rng.random(codes.size) < 0.2] = 0
    scales = rng.uniform(0.001, 0.05, shape[0]).astype(dtype)
    return Int8Weight(shape, codes.astype(np.int8), scales)


def inputs(rng, shape, activation):
    if ACTIVATIONS[activation] is None:
        return rng.standard_normal(shape) * 40
    lo, hi = ACTIVATIONS[activation]
    x = rng.integers(lo, hi + 1, size=shape).astype(np.float64)
    if x.size >= 2:
        x.reshape(-1)[:2] = (lo, hi)  # both ends of the range
    return x


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_matches_dense(case, activation, rng):
    x, b, geom = conv_setup(case, rng)
    x = inputs(rng, x.shape, activation)
    fmt = int8_weight(rng, geom.weight_shape)
    y, _, _ = check_conv_format(fmt, x, b, geom, int8_reduce_ref, f"int8 {case[0]} {activation}")
    fast = quantized.conv2d_forward(x, fmt, b, geom)  # (depthwise layers decode instead)
    assert (fast is None) == (activation == "float")
    if fast is not None:  # the integer kernel gives the same
        assert_close(fast, y, TIGHT, "integer kernel")


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("N", [1, 2, 3, 4, 64])
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_linear_matches_dense(shape, N, activation, rng):
    x = inputs(rng, (N, shape[1]), activation)
    fmt = int8_weight(rng, shape)
    b = rng.standard_normal(shape[0])
    y, _, _ = check_linear_format(fmt, x, b, int8_reduce_ref, f"int8 {shape} N={N} {activation}")
    fast = quantized.linear_forward(x, fmt, b)
    assert (fast is None) == (activation == "float")
    if fast is not None:
        assert_close(fast, y, TIGHT, "integer kernel")
    check_linear_format(fmt, x, None, int8_reduce_ref, "no bias")


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_float32(kind, rng):
    if kind == "linear":
        fmt = int8_weight(rng, (130, 33), np.float32)
        x = inputs(rng, (5, 33), "uint8").astype(np.float32)
        check_linear_format(fmt, x, rng.standard_normal(130).astype(np.float32),
                            int8_reduce_ref, "int8 f32", rtol=1e-5)
    else:
        x, b, geom = conv_setup(CONV["groups2"], rng)
        fmt = int8_weight(rng, geom.weight_shape, np.float32)
        check_conv_format(fmt, inputs(rng, x.shape, "int8").astype(np.float32),
                          b.astype(np.float32), geom, int8_reduce_ref, "int8 f32", rtol=1e-5)


def test_empty_batch(rng):
    fmt = int8_weight(rng, (7, 13))
    from robustcnn.engine.linear import linear_backward_format, linear_forward_format

    y = linear_forward_format(np.zeros((0, 13)), fmt, None)
    assert y.shape == (0, 7)
    dx, grads, db = linear_backward_format(y, np.zeros((0, 13)), fmt)
    assert dx.shape == (0, 13) and not grads["scales"].any() and not db.any()


def test_scale_gradient_by_finite_differences(rng):
    # L(scales) = Σ dy · (x Wᵀ), W = scales[o] · codes: dL/dscales against central differences.
    from robustcnn.engine.linear import linear_backward_format, linear_forward_format

    fmt = int8_weight(rng, (6, 21))
    x = inputs(rng, (4, 21), "uint8")
    dy = rng.standard_normal((4, 6))
    _, grads, _ = linear_backward_format(dy, x, fmt)
    h = 1e-6
    for o in range(6):
        plus, minus = (Int8Weight(fmt.shape, fmt.codes.copy(), fmt.scales.copy()) for _ in "pm")
        plus.scales[o] += h
        minus.scales[o] -= h
        fd = ((linear_forward_format(x, plus, None) - linear_forward_format(x, minus, None)) * dy
              ).sum() / (2 * h)
        assert grads["scales"][o] == pytest.approx(fd, rel=1e-6, abs=1e-9)


# ---------------------------------------------------------------------------------------------
# The vector tile, the input detection, the int32 bound


def tile_wrapper(rows, pmaddwd):
    tile = quantized.tile_dots_intrinsic(rows, 4, pmaddwd)

    @njit
    def run(a, m, b, o, blocks):
        return tile(a, m, b, o, blocks)

    return run


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("pmaddwd", [False, True], ids=["portable", "avx2"])
def test_tile_against_numpy(pmaddwd, rows, rng):
    if pmaddwd and not quantized.HAS_AVX2:
        pytest.skip("the host has no AVX2")
    run = tile_wrapper(rows, pmaddwd)
    a = rng.integers(-127, 256, (7, 48)).astype(np.int16)
    b = rng.integers(-127, 128, (9, 48)).astype(np.int8)
    a[0], b[2] = 255, -127  # the extremes
    for blocks in (0, 1, 3):
        picks = (2, 0, 8, 2)
        got = np.array(run(a, 1 if rows == 3 else 4, b, picks, blocks)).reshape(rows, 4)
        first = 1 if rows == 3 else 4
        want = (a[first:first + rows, :16 * blocks].astype(np.int64)
                @ b[list(picks), :16 * blocks].astype(np.int64).T)
        assert np.array_equal(got, want), f"{blocks} blocks"


@settings(max_examples=60, deadline=None, derandomize=True)
@given(values=st.lists(st.floats(-300, 300) | st.sampled_from([np.nan, np.inf, -np.inf]),
                       min_size=1, max_size=40), integral=st.booleans())
def test_eight_bit_codes(values, integral):
    x = np.array(values, dtype=np.float64)
    if integral:
        x = np.where(np.isfinite(x), np.round(x), x)
    codes = quantized.eight_bit_codes(x.reshape(1, -1), 48)
    finite = np.isfinite(x).all()
    whole = finite and (x == np.round(x)).all()
    fits = whole and ((x.min() >= 0 and x.max() <= 255) or (x.min() >= -127 and x.max() <= 127))
    assert (codes is not None) == fits
    if fits:
        assert codes.dtype == np.int16 and codes.shape == (1, 48)
        assert np.array_equal(codes[0, :x.size], x) and not codes[0, x.size:].any()


def test_int32_bound():
    # The longest row whose extreme sums still fit int32 takes the integer kernel, exactly;
    # one more value and the float path runs.
    K = quantized.MAX_INT8_K
    assert K * 255 * 127 <= 2 ** 31 - 1 < (K + 1) * 255 * 127
    codes = np.concatenate([np.full(K, 127), np.full(K, -127)]).astype(np.int8)
    fmt = Int8Weight((2, K), codes, np.ones(2))
    x = np.full((1, K), 255.0)
    y = quantized.linear_forward(x, fmt, None)
    assert y is not None and y[0, 0] == K * 255 * 127 and y[0, 1] == -K * 255 * 127
    wide = Int8Weight((1, K + 1), np.full(K + 1, 127, np.int8), np.ones(1))
    assert quantized.linear_forward(np.full((1, K + 1), 255.0), wide, None) is None


# ---------------------------------------------------------------------------------------------
# Vanhoucke et al.'s quantizer, storage, rejection


def test_from_dense_is_the_symmetric_per_channel_quantizer(rng):
    w = rng.standard_normal((6, 3, 3, 3))
    w[2] = 0.0  # an empty channel
    fmt = Int8Weight.from_dense(w)
    s = np.abs(w).reshape(6, -1).max(axis=1) / 127
    s[2] = 1.0
    assert_close(fmt.scales, s, 1e-15, "scales = max|W[o]| / 127")
    codes = fmt.codes.reshape(6, -1)
    assert np.array_equal(codes, np.clip(np.floor(w.reshape(6, -1) / s[:, None] + 0.5), -127, 127))
    assert (np.abs(codes[[0, 1, 3, 4, 5]]).max(axis=1) == 127).all() and not codes[2].any()
    err = np.abs(fmt.to_dense() - w).reshape(6, -1)
    assert (err <= s[:, None] / 2 * (1 + 1e-12)).all()  # within half a step
    assert np.array_equal(channel_scales(w), s)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_round_trip_state_and_sizes(dtype, rng):
    fmt = int8_weight(rng, (5, 2, 3, 3), dtype)
    assert fmt.dtype == dtype and fmt.value_bits() == 8
    again = Int8Weight.from_arrays(fmt.shape, fmt.arrays(), fmt.options(), dtype=dtype)
    assert np.array_equal(again.to_dense(), fmt.to_dense())
    assert again.codes is not fmt.codes and again.scales is not fmt.scales
    cast = fmt.astype(np.float32 if dtype == np.float64 else np.float64)
    assert np.array_equal(cast.codes, fmt.codes)
    assert fmt.stored_nbytes() == {"codes": 90, "scales": 20, "header": 8}
    assert fmt.nnz() == np.count_nonzero(fmt.to_dense())
    assert FORMATS["int8"] is Int8Weight and tuple(fmt.arrays()) == Int8Weight.array_names


def _int8_arrays():
    return {"codes": np.arange(-4, 8, dtype=np.int8), "scales": np.ones(3)}


INT8_BAD = [
    (lambda a: {**a, "codes": a["codes"].astype(np.float64)}, TypeError, "codes has dtype"),
    (lambda a: {**a, "codes": a["codes"][:-1]}, ValueError, "codes must be 12 int8"),
    (lambda a: {**a, "codes": np.full(12, -128, np.int16)}, ValueError, r"-127\.\.127"),
    (lambda a: {**a, "codes": np.full(12, 300, np.int16)}, ValueError, r"-127\.\.127"),
    (lambda a: {**a, "codes": a["codes"].reshape(3, 4)}, ValueError, "1 axis"),
    (lambda a: {**a, "scales": np.ones(4)}, ValueError, "one value per output channel"),
    (lambda a: {**a, "scales": np.array([1.0, np.nan, 1.0])}, ValueError, "non-finite"),
    (lambda a: {**a, "scales": np.ones(3, np.int64)}, TypeError, "expected floats"),
]


@pytest.mark.parametrize("tamper, error, match", INT8_BAD)
def test_rejects(tamper, error, match):
    with pytest.raises(error, match=match) as info:
        Int8Weight.from_arrays((3, 2, 2), tamper(_int8_arrays()), {}, at=LAYER)
    assert LAYER in str(info.value)
    with pytest.raises(ValueError, match="-128"):
        Int8Weight((3, 4), np.full(12, -128, np.int8), np.ones(3), at=LAYER)


def test_rejects_bad_scales_from_dense(rng):
    with pytest.raises(ValueError, match="finite positive"):
        Int8Weight.from_dense(rng.standard_normal((3, 4)), scales=np.array([1.0, 0.0, 1.0]))


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_count(threads, rng):
    import numba

    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip("needs 2 Numba threads")
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        x, b, geom = conv_setup(CONV[f"batch{MANY}"], rng)
        check_conv_format(int8_weight(rng, geom.weight_shape), inputs(rng, x.shape, "uint8"), b,
                          geom, int8_reduce_ref, f"{threads} thread(s)")
        check_linear_format(int8_weight(rng, (130, 33)), inputs(rng, (MANY, 33), "int8"), None,
                            int8_reduce_ref, f"{threads} thread(s)")
    finally:
        numba.set_num_threads(old)
