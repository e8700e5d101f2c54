"""engine/formats/binary.py and the kernels of engine/binary.py: both formats against the dense
kernels on their decoded weights, the XNOR-popcount kernels against the float kernels on the
same ±1 values (padding included), the scale and latent gradients (XNOR-Net's, checked by
finite differences where the sign does not move), the bit layout, and malformed structures."""

import numpy as np
import pytest
from numba import njit
from format_checks import (CONV, CONV_CASES, LINEAR_SHAPES, MANY, check_conv_format,
                           check_linear_format, conv_setup)
from helpers import assert_close

from robustcnn.engine import binary, quantized
from robustcnn.engine.conv import conv2d_forward_dense
from robustcnn.engine.formats import FORMATS, BinaryLatentWeight, BinaryWeight
from robustcnn.engine.formats.binary import pack_signs
from robustcnn.engine.linear import linear_backward_format, linear_forward_dense, linear_forward_format

LAYER = "ip1 (InnerProduct)"


def ref_signs(fmt):
    """±1 (O, K) of a format, read independently of its code: the stored words' bytes
    unpacked LSB first for ``binary``, the latent weights' signs (+ at 0) for the latent."""
    if fmt.kind == "binary":
        words = np.asarray(fmt.words, dtype="<u8")
        bits = np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")[:, :fmt.cols]
        return np.where(bits == 1, 1.0, -1.0)
    return np.where(fmt.weight.reshape(fmt.rows, -1) >= 0, 1.0, -1.0)


def binary_reduce_ref(fmt, dweight):
    d = np.asarray(dweight, dtype=np.float64).reshape(fmt.rows, -1)
    sign = ref_signs(fmt)
    if fmt.kind == "binary":
        return {"scales": (d * sign).sum(axis=1)}
    w = fmt.weight.reshape(fmt.rows, -1).astype(np.float64)
    alpha = np.abs(w).mean(axis=1, keepdims=True)
    K = w.shape[1]
    # XNOR-Net's eq. 7: the sign's straight-through part and the part through alpha
    g = fmt.gain * (alpha * (np.abs(w) <= 1) * d + sign * (sign * d).sum(axis=1, keepdims=True) / K)
    return {"weight": g.reshape(fmt.shape)}


def binary_weight(rng, shape, dtype=np.float64):
    positive = rng.random((shape[0], int(np.prod(shape[1:])))) < 0.5
    return BinaryWeight(shape, pack_signs(positive), rng.uniform(0.1, 1.0, shape[0]).astype(dtype))


def latent_weight(rng, shape, dtype=np.float64):
    w = rng.standard_normal(shape) * 0.8  # some |w| > 1: the straight-through part cancels there
    return BinaryLatentWeight(w.astype(dtype), gain=0.7)


MAKERS = {"binary": binary_weight, "binary_latent": latent_weight}


def signs(rng, shape):
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0)


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_matches_dense(case, kind, rng):
    x, b, geom = conv_setup(case, rng)
    fmt = MAKERS[kind](rng, geom.weight_shape)
    y, _, _ = check_conv_format(fmt, x, b, geom, binary_reduce_ref, f"{kind} {case[0]}")
    if kind == "binary" and not geom.depthwise:  # the add/subtract kernel ran (float input)
        assert_close(binary.conv2d_forward(x, fmt, b, geom, xnor=False), y, 1e-12, "add/subtract")


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_xnor_conv_matches_float_on_signs(case, rng):
    # ±1 inputs: the XNOR-popcount kernel (zero padding masked) equals the float kernel and the
    # dense product on the same values.
    x, b, geom = conv_setup(case, rng)
    x = signs(rng, x.shape)
    fmt = binary_weight(rng, geom.weight_shape)
    want = conv2d_forward_dense(x, fmt.to_dense(), b, geom)
    xnor = binary.conv2d_forward(x, fmt, b, geom, xnor=True)
    assert_close(xnor, want, 1e-12, f"xnor {case[0]}")
    assert_close(binary.conv2d_forward(x, fmt, b, geom, xnor=False), want, 1e-12, "float")
    assert binary.is_binary_input(x) and not binary.is_binary_input(x * 0.5)


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("N", [1, 5, 64])
@pytest.mark.parametrize("shape", LINEAR_SHAPES + [(3, 64), (4, 65), (2, 128)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
def test_linear_matches_dense(shape, N, kind, rng):
    fmt = MAKERS[kind](rng, shape)
    x = rng.standard_normal((N, shape[1]))
    check_linear_format(fmt, x, rng.standard_normal(shape[0]), binary_reduce_ref,
                        f"{kind} {shape} N={N}")
    check_linear_format(fmt, x, None, binary_reduce_ref, f"{kind} no bias")
    if kind == "binary":
        assert quantized.linear_forward(x, fmt, None) is not None
        xs = signs(rng, x.shape)  # and the XNOR-popcount path, through the format's dispatch
        y, _, _ = check_linear_format(fmt, xs, rng.standard_normal(shape[0]), binary_reduce_ref,
                                      f"xnor {shape} N={N}")
        b = rng.standard_normal(shape[0])
        assert_close(binary.linear_forward(xs, fmt, b, xnor=True),
                     binary.linear_forward(xs, fmt, b, xnor=False), 1e-12, "xnor vs float")


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_float32_and_threads(kind, rng):
    import numba

    x, b, geom = conv_setup(CONV[f"batch{MANY}"], rng)
    fmt = MAKERS[kind](rng, geom.weight_shape, dtype=np.float32)
    for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        old = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            for xs in (x, signs(rng, x.shape)):
                check_conv_format(fmt, xs.astype(np.float32), b.astype(np.float32), geom,
                                  binary_reduce_ref, f"{kind} f32 {threads} thread(s)", rtol=1e-5)
        finally:
            numba.set_num_threads(old)


@njit
def popcount_of(v):
    return binary.popcount(v)


def test_popcount(rng):
    v = rng.integers(0, 2 ** 63, 50, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    for a in list(v) + [np.uint64(0), np.uint64(2 ** 64 - 1)]:
        assert int(popcount_of(np.uint64(a))) == bin(int(a)).count("1")


def test_bit_layout_and_scales(rng):
    w = rng.standard_normal((3, 70))
    w[0, 5] = 0.0  # sign(0) = +
    fmt = BinaryWeight.from_dense(w)
    assert fmt.words.shape == (3, 2) and fmt.words.dtype == np.uint64
    expected = sum(1 << k for k in range(64) if w[1, k] >= 0)
    assert int(fmt.words[1, 0]) == expected  # bit k of word 0 is weight k, LSB first
    assert int(fmt.words[1, 1]) == sum(1 << (k - 64) for k in range(64, 70) if w[1, k] >= 0)
    alpha = np.abs(w).mean(axis=1)
    assert_close(fmt.scales, alpha, 1e-15, "alpha = mean|W|")
    assert_close(fmt.to_dense(), alpha[:, None] * np.where(w >= 0, 1, -1), 1e-15, "alpha sign W")
    # alpha = mean|W| is the L2-closest scale for these signs (XNOR-Net eq. 2): ± a step is worse
    for a in (alpha * 0.99, alpha * 1.01):
        worse = ((w - a[:, None] * np.where(w >= 0, 1, -1)) ** 2).sum()
        assert worse > ((w - fmt.to_dense()) ** 2).sum()
    assert fmt.value_bits() == 1 and fmt.stored_nbytes() == {"signs": 48, "scales": 12,
                                                             "header": 8}
    big = BinaryWeight.from_dense(rng.standard_normal((64, 4096)))
    assert 4 * big.size / big.words.nbytes == 32  # one bit per weight
    latent = BinaryLatentWeight.from_dense(w, gain=2.0)
    assert_close(latent.to_dense(), fmt.to_dense(), 1e-15, "latent starts at from_dense")
    assert np.array_equal(latent.binary().words, fmt.words)
    assert_close(latent.binary().scales, alpha, 1e-15, "gain · alpha of w / gain")


def test_round_trip_magnitude_and_registry(rng):
    fmt = binary_weight(rng, (7, 3, 3, 3))
    again = BinaryWeight.from_arrays(fmt.shape, fmt.arrays(), {}, dtype=np.float64)
    assert np.array_equal(again.to_dense(), fmt.to_dense())
    narrow = {**fmt.arrays(), "words": fmt.words.astype(np.uint64) & np.uint64(0xFF)}
    assert BinaryWeight.from_arrays(fmt.shape, {**narrow, "words": narrow["words"].astype(
        np.uint8)}, {}, dtype=np.float64).words.dtype == np.uint64  # a narrower stored type
    assert fmt.nnz() == np.count_nonzero(fmt.to_dense())
    assert_close(fmt.magnitude().to_dense(), np.abs(fmt.to_dense()), 0, "|W|")
    latent = latent_weight(rng, (3, 4))
    back = BinaryLatentWeight.from_arrays((3, 4), latent.arrays(), latent.options(),
                                          dtype=np.float64)
    assert np.array_equal(back.to_dense(), latent.to_dense()) and back.gain == 0.7
    assert FORMATS["binary"] is BinaryWeight and FORMATS["binary_latent"] is BinaryLatentWeight


def test_scale_gradients_by_finite_differences(rng):
    # W is linear in alpha for fixed signs: central differences are exact to rounding.
    fmt = binary_weight(rng, (6, 21))
    x, dy = rng.standard_normal((4, 21)), rng.standard_normal((4, 6))
    _, grads, _ = linear_backward_format(dy, x, fmt)
    h = 1e-6
    for i in range(6):
        values = []
        for sign in (1, -1):
            scales = fmt.scales.copy()
            scales[i] += sign * h
            other = BinaryWeight.from_arrays(fmt.shape, {**fmt.arrays(), "scales": scales}, {},
                                             dtype=np.float64)
            values.append((linear_forward_format(x, other, None) * dy).sum())
        assert grads["scales"][i] == pytest.approx((values[0] - values[1]) / (2 * h), rel=1e-6)


def test_latent_gradient_through_alpha_by_finite_differences(rng):
    # Every |w| > 1: the sign's straight-through part is cancelled (Hubara et al.), and what is
    # left is the exact gradient through alpha = mean|w|, which finite differences measure
    # (no sign flips under a step of 1e-6).
    w = rng.uniform(1.1, 2.0, (5, 17)) * np.where(rng.random((5, 17)) < 0.5, -1, 1)
    fmt = BinaryLatentWeight(w, gain=1.5)
    x, dy = rng.standard_normal((3, 17)), rng.standard_normal((3, 5))
    _, grads, _ = linear_backward_format(dy, x, fmt)
    h = 1e-6
    fd = np.zeros_like(w)
    for idx in np.ndindex(w.shape):
        values = []
        for sign in (1, -1):
            moved = w.copy()
            moved[idx] += sign * h
            values.append((linear_forward_format(x, BinaryLatentWeight(moved, 1.5), None) * dy).sum())
        fd[idx] = (values[0] - values[1]) / (2 * h)
    assert_close(grads["weight"], fd, 1e-6, "dL/dw through alpha")
    assert np.abs(fd).max() > 1e-3


def test_latent_straight_through_part(rng):
    fmt = latent_weight(rng, (4, 30))
    d = rng.standard_normal((4, 30))
    inside = np.abs(fmt.weight) <= 1
    assert inside.any() and (~inside).any()
    g = fmt.reduce_dense_grad(d)["weight"]
    # with the part through alpha removed, g is gain · alpha · dL/dW inside |w| <= 1, 0 outside
    sign = ref_signs(fmt)
    rest = g - fmt.gain * sign * (sign * d).sum(axis=1, keepdims=True) / 30
    alpha = np.abs(fmt.weight).mean(axis=1, keepdims=True)
    assert_close(rest, np.where(inside, fmt.gain * alpha * d, 0.0), 1e-12, "straight-through")


def _arrays():
    return {"words": pack_signs(np.array([[1, 0, 1], [0, 0, 1]], bool)),
            "scales": np.array([0.5, 0.25])}


BAD = [
    (lambda a: {**a, "words": a["words"][:1]}, ValueError, r"must be 2 x 1 uint64"),
    (lambda a: {**a, "words": a["words"].reshape(-1)}, ValueError, "must have 2 axis"),
    (lambda a: {**a, "words": a["words"] | np.uint64(8)}, ValueError, "padding bits"),
    (lambda a: {**a, "words": np.array([[-1], [1]])}, ValueError, "negative"),
    (lambda a: {**a, "words": a["words"].astype(float)}, TypeError, "expected integers"),
    (lambda a: {**a, "scales": np.array([0.5])}, ValueError, "one value per output channel"),
    (lambda a: {**a, "scales": np.array([0.5, np.nan])}, ValueError, "non-finite"),
]


@pytest.mark.parametrize("tamper, error, match", BAD)
def test_binary_rejects(tamper, error, match):
    with pytest.raises(error, match=match) as info:
        BinaryWeight.from_arrays((2, 3), tamper(_arrays()), {}, at=LAYER)
    assert LAYER in str(info.value) and "\n" not in str(info.value)


def test_binary_latent_rejects(rng):
    good = {"weight": rng.standard_normal((2, 3))}
    with pytest.raises(ValueError, match=r"ip1 .*weight has shape \(3, 2\)"):
        BinaryLatentWeight.from_arrays((2, 3), {"weight": good["weight"].T}, {}, at=LAYER)
    with pytest.raises(ValueError, match="gain must be finite and > 0"):
        BinaryLatentWeight.from_arrays((2, 3), good, {"gain": -1.0}, at=LAYER)
    with pytest.raises(ValueError, match="non-finite"):
        BinaryLatentWeight.from_arrays((2, 3), {"weight": np.full((2, 3), np.nan)}, {}, at=LAYER)


def test_dense_reference_is_independent(rng):
    # The float64 dense product on ±alpha weights, written out: the check the others lean on.
    fmt = binary_weight(rng, (5, 9))
    x = rng.standard_normal((2, 9))
    manual = x @ (fmt.scales[:, None] * ref_signs(fmt)).T
    assert_close(linear_forward_dense(x, fmt.to_dense(), None), manual, 1e-12, "dense")
