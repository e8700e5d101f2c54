"""engine/formats/ternary.py and the ternary add/subtract kernels of engine/quantized.py: both
formats against the dense kernels on their decoded weights, TTQ's defining equations (the
threshold, eq. 7's scale gradients by finite differences, eq. 8's latent gradient), and
malformed structures."""

import numpy as np
import pytest
from format_checks import (CONV, CONV_CASES, LINEAR_SHAPES, MANY, check_conv_format,
                           check_linear_format, conv_setup)
from helpers import assert_close

from robustcnn.engine import quantized
from robustcnn.engine.formats import FORMATS, TernaryWeight, TTQLatentWeight
from robustcnn.engine.formats.base import pack_bits
from robustcnn.engine.linear import linear_backward_format, linear_forward_format

LAYER = "ip1 (InnerProduct)"


def ternary_ref_codes(w, t):
    """TTQ's partition, written out: +1 above t·max|w|, −1 below its negative, else 0."""
    delta = t * np.abs(w).max()
    return np.where(w > delta, 1, np.where(w < -delta, -1, 0))


def ternary_reduce_ref(fmt, dweight):
    d = np.asarray(dweight, dtype=np.float64).reshape(-1)
    if fmt.kind == "ternary":
        codes = np.unpackbits(fmt.codes, bitorder="little").reshape(-1, 2)[:fmt.size]
        codes = codes[:, 0] + 2 * codes[:, 1]
        sign = np.where(codes == 1, 1, np.where(codes == 2, -1, 0))
        return {"scales": np.array([d[sign == 1].sum(), -d[sign == -1].sum()])}
    sign = ternary_ref_codes(fmt.weight.reshape(-1), fmt.threshold)
    wp, wn = fmt.scales
    latent = np.where(sign == 1, wp * d, np.where(sign == -1, wn * d, d))  # eq. 8
    return {"weight": latent.reshape(fmt.shape),
            "scales": np.array([d[sign == 1].sum(), -d[sign == -1].sum()])}  # eq. 7


def ternary_weight(rng, shape, sparsity=0.4, dtype=np.float64):
    sign = rng.choice([-1, 1], size=int(np.prod(shape)))
    sign[rng.random(sign.size) < sparsity] = 0
    codes = np.where(sign == 1, 1, np.where(sign == -1, 2, 0))
    return TernaryWeight(shape, pack_bits(codes, 2), rng.uniform(0.1, 1.0, 2).astype(dtype))


def latent_weight(rng, shape, dtype=np.float64):
    w = rng.standard_normal(shape)
    w[np.abs(w) < 0.2] *= 0.1  # a share of weights under the threshold
    return TTQLatentWeight(w.astype(dtype), rng.uniform(0.1, 1.0, 2).astype(dtype), 0.3)


MAKERS = {"ternary": ternary_weight, "ttq_latent": latent_weight}


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_matches_dense(case, kind, rng):
    x, b, geom = conv_setup(case, rng)
    fmt = MAKERS[kind](rng, geom.weight_shape)
    y, _, _ = check_conv_format(fmt, x, b, geom, ternary_reduce_ref, f"{kind} {case[0]}")
    if kind == "ternary":  # the add/subtract kernel ran (it takes any input)
        assert_close(quantized.conv2d_forward(x, fmt, b, geom), y, 1e-12, "add/subtract kernel")


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("N", [1, 5, 64])
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_linear_matches_dense(shape, N, kind, rng):
    fmt = MAKERS[kind](rng, shape)
    x = rng.standard_normal((N, shape[1]))
    y, _, _ = check_linear_format(fmt, x, rng.standard_normal(shape[0]), ternary_reduce_ref,
                                  f"{kind} {shape} N={N}")
    if kind == "ternary":
        assert quantized.linear_forward(x, fmt, None) is not None
    check_linear_format(fmt, x, None, ternary_reduce_ref, f"{kind} no bias")


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_float32_and_threads(kind, rng):
    import numba

    x, b, geom = conv_setup(CONV[f"batch{MANY}"], rng)
    fmt = MAKERS[kind](rng, geom.weight_shape, dtype=np.float32)
    for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        old = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            check_conv_format(fmt, x.astype(np.float32), b.astype(np.float32), geom,
                              ternary_reduce_ref, f"{kind} f32 {threads} thread(s)", rtol=1e-5)
        finally:
            numba.set_num_threads(old)


def test_ttq_threshold_and_start(rng):
    w = rng.standard_normal((8, 30))
    latent = TTQLatentWeight.from_dense(w)
    top = np.abs(w).max()
    assert latent.threshold == 0.05 and np.abs(latent.weight).max() == pytest.approx(1.0)
    assert latent.delta() == pytest.approx(0.05)
    sign = ternary_ref_codes(w, 0.05)
    # The start: each side's mean magnitude, in the weight's own units.
    assert latent.scales[0] == pytest.approx(w[sign == 1].mean(), rel=1e-12)
    assert latent.scales[1] == pytest.approx(-w[sign == -1].mean(), rel=1e-12)
    assert_close(latent.to_dense(), np.where(sign == 1, latent.scales[0],
                                             np.where(sign == -1, -latent.scales[1], 0)), 0, "W_t")
    again = latent.ternary()
    assert isinstance(again, TernaryWeight) and np.array_equal(again.to_dense(), latent.to_dense())
    assert again.stored_bytes() == 60 + 8 + 8 and again.value_bits() == 2
    assert 4 * w.size / again.codes.nbytes == 16  # 2 bits per weight
    assert top > 1


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_scale_gradients_by_finite_differences(kind, rng):
    # W_t is linear in (wp, wn) for a fixed partition: central differences are exact to rounding.
    fmt = MAKERS[kind](rng, (6, 21))
    x, dy = rng.standard_normal((4, 21)), rng.standard_normal((4, 6))
    _, grads, _ = linear_backward_format(dy, x, fmt)
    h = 1e-6
    for i in range(2):
        values = []
        for sign in (1, -1):
            scales = fmt.scales.copy()
            scales[i] += sign * h
            other = type(fmt).from_arrays(fmt.shape, {**fmt.arrays(), "scales": scales},
                                          fmt.options(), dtype=np.float64)
            values.append((linear_forward_format(x, other, None) * dy).sum())
        assert grads["scales"][i] == pytest.approx((values[0] - values[1]) / (2 * h), rel=1e-6)


def test_ttq_latent_gradient_is_eq8(rng):
    fmt = latent_weight(rng, (5, 40))
    d = rng.standard_normal((5, 40))
    g = fmt.reduce_dense_grad(d)["weight"]
    sign = ternary_ref_codes(fmt.weight, fmt.threshold)
    assert (sign == 0).any() and (sign == 1).any() and (sign == -1).any()
    assert_close(g[sign == 1], fmt.scales[0] * d[sign == 1], 1e-15, "wp · dL/dW_t")
    assert_close(g[sign == -1], fmt.scales[1] * d[sign == -1], 1e-15, "wn · dL/dW_t")
    assert_close(g[sign == 0], d[sign == 0], 1e-15, "1 · dL/dW_t")


def test_ternary_round_trip_and_sizes(rng):
    fmt = ternary_weight(rng, (7, 3, 3, 3))
    again = TernaryWeight.from_arrays(fmt.shape, fmt.arrays(), {}, dtype=np.float64)
    assert np.array_equal(again.to_dense(), fmt.to_dense())
    assert fmt.stored_nbytes() == {"codes": 48, "scales": 8, "header": 8}
    assert fmt.nnz() == np.count_nonzero(fmt.to_dense())
    w = rng.standard_normal((4, 9))
    t = TernaryWeight.from_dense(w)
    sign = ternary_ref_codes(w, 0.05)
    assert_close(t.to_dense(), np.where(sign == 1, w[sign == 1].mean(),
                                        np.where(sign == -1, w[sign == -1].mean(), 0)), 1e-15,
                 "from_dense")
    assert FORMATS["ternary"] is TernaryWeight and FORMATS["ttq_latent"] is TTQLatentWeight
    latent = latent_weight(rng, (3, 4))
    back = TTQLatentWeight.from_arrays((3, 4), latent.arrays(), latent.options(), dtype=np.float64)
    assert np.array_equal(back.to_dense(), latent.to_dense()) and back.threshold == 0.3


def _ternary_arrays():
    return {"codes": pack_bits(np.array([0, 1, 2, 1, 0, 2]), 2), "scales": np.array([0.5, 0.25])}


TERNARY_BAD = [
    (lambda a: {**a, "codes": pack_bits(np.array([0, 1, 3, 1, 0, 2]), 2)}, ValueError, "code is 3"),
    (lambda a: {**a, "codes": a["codes"][:1]}, ValueError, "must be 2 uint8 bytes"),
    (lambda a: {**a, "codes": np.array([0x24, 0x90], np.uint8)}, ValueError, "padding bits"),
    (lambda a: {**a, "codes": np.array([1, 256])}, ValueError, "outside 0..255"),
    (lambda a: {**a, "scales": np.array([0.5])}, ValueError, r"two magnitudes"),
    (lambda a: {**a, "scales": np.array([0.5, -0.1])}, ValueError, r"two magnitudes"),
    (lambda a: {**a, "scales": np.array([0.5, np.inf])}, ValueError, "non-finite"),
]


@pytest.mark.parametrize("tamper, error, match", TERNARY_BAD)
def test_ternary_rejects(tamper, error, match):
    with pytest.raises(error, match=match) as info:
        TernaryWeight.from_arrays((2, 3), tamper(_ternary_arrays()), {}, at=LAYER)
    assert LAYER in str(info.value)


def test_ttq_latent_rejects(rng):
    good = {"weight": rng.standard_normal((2, 3)), "scales": np.array([0.5, 0.25])}
    with pytest.raises(ValueError, match=r"ip1 .*weight has shape \(3, 2\)"):
        TTQLatentWeight.from_arrays((2, 3), {**good, "weight": good["weight"].T}, {}, at=LAYER)
    with pytest.raises(ValueError, match="threshold must be in"):
        TTQLatentWeight.from_arrays((2, 3), good, {"threshold": 1.5}, at=LAYER)
    with pytest.raises(ValueError, match="non-finite"):
        TTQLatentWeight.from_arrays((2, 3), {**good, "weight": np.full((2, 3), np.nan)}, {},
                                    at=LAYER)
