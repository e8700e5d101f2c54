"""engine/formats/pow2.py: the power-of-two format of Incremental Network Quantization (Zhou et
al. 2017) and the partly frozen weights INQ retrains — the quantizer against the paper's
equations (eq. 2–4) written out here on hand cases and random weights, the partition's portions,
both formats against the dense kernels on their decoded weights, the masked gradient, finite
differences, the two row decoders, |W|, and malformed structures."""

import math

import numpy as np
import pytest
from format_checks import (CONV_CASES, LINEAR_SHAPES, check_conv_format, check_linear_format,
                           conv_setup)
from helpers import assert_close, single_thread

from robustcnn.engine.formats import FORMATS, INQLatentWeight, Pow2Weight
from robustcnn.engine.formats.base import pack_bits
from robustcnn.engine.formats.pow2 import (n2_of, pow2_rows_ldexp, quantize_codes,
                                           top_exponent, value_table)
from robustcnn.engine.linear import linear_backward_format, linear_forward_format

LAYER = "ip1 (InnerProduct)"


# ---------------------------------------------------------------------------------------------
# The paper's equations, written out independently


def paper_n1(s):
    """Eq. 3: n1 = floor(log2(4s/3))."""
    return math.floor(math.log2(4 * s / 3))


def paper_quantize(w, n1, b):
    """Eq. 1, 2 and 4 literally: P = {±2^n1 … ±2^n2, 0}, n2 = n1 + 1 − 2^(b−1)/2; w ↦ β·sgn(w)
    for the β with (α + β)/2 ≤ |w| < 3β/2 (α the next smaller element of P's non-negative part),
    else 0."""
    n2 = n1 + 1 - 2 ** (b - 1) // 2
    P = [0.0] + [2.0 ** n for n in range(n2, n1 + 1)]
    out = []
    for v in np.asarray(w, dtype=np.float64).reshape(-1):
        q = 0.0
        for alpha, beta in zip(P, P[1:]):
            if (alpha + beta) / 2 <= abs(v) < 3 * beta / 2:
                q = beta * np.sign(v)
        out.append(q)
    return np.array(out).reshape(np.shape(w))


def decoded(w, bits, n1=None):
    return Pow2Weight.from_dense(np.asarray(w, np.float64), bits, n1=n1).to_dense()


def test_hand_cases():
    # s = 0.9: 4s/3 = 1.2, n1 = 0; b = 5: n2 = 0 + 1 − 8 = −7, values ±1 … ±2^−7 and 0.
    w = np.array([0.9, -0.9, 0.75, 0.7499, 0.375, 0.3749, -0.6, 2.0 ** -8, 2.0 ** -8 * 0.999,
                  0.0, 3 * 2.0 ** -9, -0.011])
    want = np.array([1, -1, 1, 0.5, 0.5, 0.25, -0.5, 2.0 ** -7, 0, 0, 2.0 ** -7, -2.0 ** -7])
    assert top_exponent(w) == 0 == paper_n1(0.9) and n2_of(0, 5) == -7
    assert_close(decoded(w, 5), want, 0, "eq. 2 hand cases")
    assert_close(paper_quantize(w, 0, 5), want, 0, "the test's own eq. 2")
    # b = 2: ternary {0, ±2^n1}; b = 3: {0, ±2^n1, ±2^(n1−1)}
    assert_close(decoded([0.9, 0.5, 0.4999, -0.6, 0.2], 2), [1, 1, 0, -1, 0], 0, "2 bits")
    assert_close(decoded([0.9, 0.5, 0.26, -0.6, 0.2], 3), [1, 0.5, 0.5, -0.5, 0], 0, "3 bits")
    # s exactly on eq. 3's boundary: 4s/3 = 2 → n1 = 1
    assert top_exponent([1.5, -0.1]) == 1 == paper_n1(1.5)
    assert top_exponent(np.zeros(3)) == 0  # no scale: all codes 0


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
def test_random_weights_match_the_paper(bits, rng):
    for scale in (1e-3, 0.07, 1.0, 30.0):
        w = rng.standard_normal(500) * scale
        w[::7] = 0
        n1 = paper_n1(np.abs(w).max())
        fmt = Pow2Weight.from_dense(w, bits)
        assert fmt.n1 == n1 == top_exponent(w)
        assert_close(fmt.to_dense(), paper_quantize(w, n1, bits), 0, f"{bits} bits ×{scale}")
        levels = np.unique(np.abs(fmt.to_dense()))
        assert levels.size <= 2 ** (bits - 2) + 1
        assert set(value_table(n1, bits, np.float64)) >= set(np.unique(fmt.to_dense()))


def test_value_count_per_bits():
    # one bit for zero, 2^(b−1) signed powers of two: 2^(b−2) exponents per sign
    for bits in range(2, 9):
        table = value_table(3, bits, np.float64)
        assert table.size == 2 ** (bits - 1) + 1 <= 2 ** bits
        assert n2_of(3, bits) == 3 + 1 - 2 ** (bits - 1) // 2
        assert table[1] == 8.0 and table[2 ** (bits - 2)] == 2.0 ** n2_of(3, bits)


def test_clip_above_the_top_level():
    # retrained weights past 3·2^(n1−1) stay at 2^n1 (eq. 2 read literally would zero them)
    assert_close(decoded([3.5, -5.0, 0.1], 5, n1=1), [2, -2, 0.125], 0, "clip")


# ---------------------------------------------------------------------------------------------
# The partition


def test_partition_portions_largest_first(rng):
    w = rng.standard_normal((20, 40))
    fmt = INQLatentWeight.from_dense(w, 5)
    assert fmt.frozen_share() == 0 and fmt.n1 == paper_n1(np.abs(w).max())
    frozen_before = fmt.frozen.astype(bool)
    for portion in (0.5, 0.75, 0.875, 1.0):
        before = fmt.weight.copy()
        fmt = fmt.freeze(portion)
        frozen = fmt.frozen.astype(bool)
        assert frozen.sum() == round(portion * w.size)
        assert (frozen | ~frozen_before).all() and (frozen >= frozen_before).all()  # superset
        new = frozen & ~frozen_before
        rest = ~frozen
        flat = before.reshape(-1)
        if rest.any():  # the newly frozen are the largest of those not frozen before
            assert np.abs(flat[new]).min() >= np.abs(flat[rest]).max()
        assert_close(fmt.weight.reshape(-1)[new], paper_quantize(flat[new], fmt.n1, 5), 0,
                     f"{portion}: quantized by eq. 2")
        assert np.array_equal(fmt.weight.reshape(-1)[rest], flat[rest])  # the rest untouched
        frozen_before = frozen
    assert np.array_equal(fmt.pow2().to_dense(), fmt.weight)


def test_frozen_gradient_is_masked_and_frozen_weights_stay_in_training():
    from quant_nets import bars, trained_tiny_lenet

    from robustcnn.compress.inq import freeze, to_latent
    from robustcnn.engine.train import SGD, Schedule, fit

    with single_thread():
        net, x, y = trained_tiny_lenet(epochs=2)
    layers = ["conv1", "ip1", "ip2"]
    to_latent(net, layers, 4)
    freeze(net, layers, 0.5)
    before = {n: net[n].weight_format.weight.copy() for n in layers}
    d = np.random.default_rng(0).standard_normal(net["ip1"].weight_shape)
    g = net["ip1"].weight_format.reduce_dense_grad(d)["weight"]
    mask = net["ip1"].weight_format.frozen.reshape(d.shape) == 1
    assert (g[mask] == 0).all() and np.array_equal(g[~mask], d[~mask].astype(g.dtype))
    with single_thread():  # momentum and a large step: only a masked gradient keeps them
        fit(net, x, y, epochs=1, batch_size=32, optimizer=SGD(0.9, 5e-4),
            schedule=Schedule("constant", 0.1, total=16), progress=False, log=None)
    for n in layers:
        fmt = net[n].weight_format
        frozen = fmt.frozen.reshape(fmt.shape) == 1
        assert np.array_equal(fmt.weight[frozen], before[n][frozen]), n
        assert not np.array_equal(fmt.weight[~frozen], before[n][~frozen]), n
    assert net.accuracy(*bars(64, seed=2)) > 0.5


# ---------------------------------------------------------------------------------------------
# Kernels against the dense ones on the decoded weights (float64)


def pow2_weight(rng, shape, dtype=np.float64, bits=5):
    w = rng.standard_normal(shape) * 0.3
    w[rng.random(shape) < 0.3] = 0
    return Pow2Weight.from_dense(w, bits, dtype=dtype)


def latent_weight(rng, shape, dtype=np.float64):
    return INQLatentWeight.from_dense(rng.standard_normal(shape), 5, dtype=dtype).freeze(0.5)


def reduce_ref(fmt, dweight):
    if fmt.kind == "pow2":
        return {}
    d = np.asarray(dweight, dtype=np.float64)
    return {"weight": d * (1 - fmt.frozen.reshape(fmt.shape))}


MAKERS = {"pow2": pow2_weight, "inq_latent": latent_weight}


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_matches_dense(case, kind, rng):
    x, b, geom = conv_setup(case, rng)
    check_conv_format(MAKERS[kind](rng, geom.weight_shape), x, b, geom, reduce_ref,
                      f"{kind} {case[0]}")


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("N", [1, 5, 64])
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_linear_matches_dense(shape, N, kind, rng):
    fmt = MAKERS[kind](rng, shape)
    x = rng.standard_normal((N, shape[1]))
    check_linear_format(fmt, x, rng.standard_normal(shape[0]), reduce_ref, f"{kind} {shape} N={N}")
    check_linear_format(fmt, x, None, reduce_ref, f"{kind} no bias")


@pytest.mark.parametrize("bits", [2, 3, 5, 7, 8])
def test_float32_and_bits(bits, rng):
    fmt = pow2_weight(rng, (9, 100), np.float32, bits)
    assert fmt.to_dense().dtype == np.float32 and fmt.value_bits() == bits
    x = rng.standard_normal((5, 100)).astype(np.float32)
    check_linear_format(fmt, x, None, reduce_ref, f"f32 {bits} bits", rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_gradients_by_finite_differences(kind, rng):
    fmt = MAKERS[kind](rng, (6, 21))
    x, dy = rng.standard_normal((4, 21)), rng.standard_normal((4, 6))
    dx, grads, _ = linear_backward_format(dy, x, fmt)
    h = 1e-6
    for i in [(0, 0), (3, 7), (1, 20)]:
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        fd = ((linear_forward_format(xp, fmt, None) - linear_forward_format(xm, fmt, None))
              * dy).sum() / (2 * h)
        assert dx[i] == pytest.approx(fd, rel=1e-6, abs=1e-9)
    if kind == "inq_latent":  # the free weights' gradient; the frozen ones' is 0
        for o, k in [(0, 0), (2, 5), (5, 20), (4, 11)]:
            w = fmt.weight.copy()
            flat = o * 21 + k
            values = []
            for sign in (1, -1):
                w2 = w.copy()
                w2[o, k] += sign * h
                other = INQLatentWeight(w2, fmt.frozen, fmt.n1, fmt.bits) if not fmt.frozen[flat] \
                    else None
                if other is None:
                    break
                values.append((linear_forward_format(x, other, None) * dy).sum())
            want = 0.0 if fmt.frozen[flat] else (values[0] - values[1]) / (2 * h)
            assert grads["weight"][o, k] == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_ldexp_decoder_matches_the_table(rng):
    for bits in (2, 3, 5, 8):
        fmt = pow2_weight(rng, (13, 37), bits=bits)
        dense = fmt.to_dense()
        scratch = np.empty((13, 37))
        for lo, hi in [(0, 13), (3, 4), (5, 11)]:
            assert np.array_equal(pow2_rows_ldexp(fmt.codes, bits, fmt.n1, 37, lo, hi, scratch),
                                  dense[lo:hi])


def test_magnitude_round_trip_and_sizes(rng):
    fmt = pow2_weight(rng, (7, 3, 3, 3))
    assert np.array_equal(fmt.magnitude().to_dense(), np.abs(fmt.to_dense()))
    again = Pow2Weight.from_arrays(fmt.shape, fmt.arrays(), fmt.options(), dtype=np.float64)
    assert np.array_equal(again.to_dense(), fmt.to_dense())
    assert fmt.stored_nbytes() == {"codes": (189 * 5 + 7) // 8, "header": 10}
    assert 4 * fmt.size / fmt.codes.nbytes == pytest.approx(32 / 5, rel=0.01)
    assert FORMATS["pow2"] is Pow2Weight and FORMATS["inq_latent"] is INQLatentWeight
    lat = latent_weight(rng, (3, 4))
    back = INQLatentWeight.from_arrays((3, 4), lat.arrays(), lat.options(), dtype=np.float64)
    assert np.array_equal(back.weight, lat.weight) and np.array_equal(back.frozen, lat.frozen)
    assert Pow2Weight.from_dense(fmt.to_dense(), 5, n1=fmt.n1).to_dense().tolist() \
        == fmt.to_dense().tolist()  # a pow2 weight re-quantizes to itself


# ---------------------------------------------------------------------------------------------
# Malformed structures


def _arrays():
    return {"codes": pack_bits(np.array([0, 1, 2, 9, 16, 3]), 5)}


POW2_BAD = [
    (lambda a: ({"codes": pack_bits(np.array([0, 1, 2, 9, 17, 3]), 5)}, {}), "a code is above 16"),
    (lambda a: ({"codes": a["codes"][:3]}, {}), "must be 4 uint8 bytes"),
    (lambda a: ({"codes": np.append(a["codes"][:3], a["codes"][3] | 0xC0)}, {}), "padding bits"),
    (lambda a: ({"codes": np.array([1, 256, 0, 0])}, {}), "outside 0..255"),
    (lambda a: (a, {"n1": 120, "bits": 9}), "bits must be an integer 2..8"),
    (lambda a: (a, {"n1": -120}), r"n2 = -127 leave float32's normal range"),
    (lambda a: (a, {"n1": 128}), "leave float32's normal range"),
    (lambda a: (a, {"n1": 1.5}), "n1 must be an integer"),
    (lambda a: (a, {"n1": None}), "n1 must be an integer"),
]


@pytest.mark.parametrize("tamper, match", POW2_BAD)
def test_pow2_rejects(tamper, match):
    arrays, options = tamper(_arrays())
    with pytest.raises(ValueError, match=match) as info:
        Pow2Weight.from_arrays((2, 3), arrays, {"bits": 5, "n1": 0, **options}, at=LAYER)
    assert LAYER in str(info.value)
    with pytest.raises(ValueError, match="option 'n1' is missing"):
        Pow2Weight.from_arrays((2, 3), _arrays(), {"bits": 5}, at=LAYER)


def test_inq_latent_rejects(rng):
    good = {"weight": np.array([[1.0, 0.3, 0.2], [0.5, -0.1, 0.0]]),
            "frozen": np.array([1, 0, 0, 1, 0, 0], np.uint8)}
    opts = {"bits": 5, "n1": 0}
    INQLatentWeight.from_arrays((2, 3), good, opts, at=LAYER)
    for arrays, match in [({**good, "frozen": np.array([1, 0, 1, 1, 0, 0])}, "not one of its"),
                          ({**good, "frozen": np.array([2, 0, 0, 1, 0, 0])}, "flags 0/1"),
                          ({**good, "frozen": np.array([1, 0, 0, 1, 0])}, "flags 0/1"),
                          ({**good, "weight": good["weight"].T}, r"weight has shape \(3, 2\)")]:
        with pytest.raises(ValueError, match=match) as info:
            INQLatentWeight.from_arrays((2, 3), arrays, opts, at=LAYER)
        assert LAYER in str(info.value)
