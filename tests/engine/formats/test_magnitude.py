"""``WeightFormat.magnitude``: |W| in the same format, so the format's own kernels compute
|W|·x on its stored entries (interval bound propagation's radius, ``robustcnn.certify``).

Every kernel kind, convolution and fully connected, forward and input gradient, against a
float64 NumPy reference on |W| decoded to dense; the original format is left unchanged and the
structure arrays are shared, never copied to a dense weight.
"""

import numpy as np
import pytest
from helpers import assert_close, check_op

from robustcnn.engine.conv import (conv2d_backward_format, conv2d_forward_format,
                                   conv2d_geometry)
from robustcnn.engine.formats import FORMATS
from robustcnn.engine.linear import linear_backward_format, linear_forward_format

KINDS = ("dense", "csr", "codebook", "sparse_codebook", "huffman")
OPTIONS = {"dense": {}, "csr": {}, "codebook": dict(bits=4),
           "sparse_codebook": dict(code_bits=4, gap_bits=3), "huffman": dict(code_bits=4, gap_bits=3)}
TIGHT = 1e-12


def weight(rng, shape, sparsity=0.6):
    """15 levels of both signs (every format stores them exactly), ``sparsity`` zeros."""
    values = np.sort(rng.uniform(0.1, 1.0, 15)) * rng.choice([-1.0, 1.0], 15)
    w = rng.choice(values, size=int(np.prod(shape)))
    w[rng.permutation(w.size)[:round(sparsity * w.size)]] = 0.0
    return w.reshape(shape)


def conv_ref(x, w, stride, padding, groups):
    """y[n, o, i, j] = Σ w[o, c, a, b] · xpad[n, g·Cg + c, i·s + a, j·s + b], by loops over taps."""
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (H + 2 * padding - kh) // stride + 1
    ow = (W + 2 * padding - kw) // stride + 1
    y = np.zeros((N, O, oh, ow))
    og = O // groups
    for o in range(O):
        g = o // og
        for a in range(kh):
            for b in range(kw):
                patch = xp[:, g * Cg:(g + 1) * Cg, a:a + stride * oh:stride, b:b + stride * ow:stride]
                y[:, o] += np.einsum("nchw,c->nhw", patch, w[o, :, a, b])
    return y


CONV_CASES = [("basic", 2, 3, 7, 4, 3, 1, 1, 1), ("stride2", 2, 4, 9, 6, 3, 2, 0, 1),
              ("groups2", 2, 4, 6, 6, 3, 1, 1, 2), ("depthwise", 2, 4, 6, 4, 3, 1, 1, 4)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_magnitude_matches_dense_reference(case, kind, rng):
    _, N, C, H, O, k, stride, padding, groups = case
    w = weight(rng, (O, C // groups, k, k))
    fmt = FORMATS[kind].from_dense(w, **OPTIONS[kind])
    geom = conv2d_geometry((C, H, H), w.shape, stride, padding, 1, groups)
    mag = fmt.magnitude()
    dense_abs = np.abs(fmt.to_dense())

    def ref_backward(dy, x):
        # the adjoint of the reference, by the transpose of its taps
        return _conv_ref_input_grad(dy, dense_abs, x.shape, stride, padding, groups)

    check_op(lambda x: conv2d_forward_format(x, mag, None, geom),
             lambda x: conv_ref(x, dense_abs, stride, padding, groups),
             [rng.standard_normal((N, C, H, H))],
             backward=lambda dy, x: conv2d_backward_format(dy, x, mag, geom,
                                                           need_weight=False)[0],
             ref_backward=ref_backward, rtol=TIGHT, grad_rtol=TIGHT, fd=False,
             what=f"|W| conv {kind}")
    # the original keeps its signed values; the structure is shared, the values are new
    assert_close(fmt.to_dense(), w, 0, f"{kind} original")
    for name, array in fmt.arrays().items():
        if name in fmt.trainable:
            assert mag.arrays()[name] is not array
            assert (mag.arrays()[name] >= 0).all()
        else:
            assert mag.arrays()[name] is array


def _conv_ref_input_grad(dy, w, shape, stride, padding, groups):
    N, C, H, W = shape
    O, Cg, kh, kw = w.shape
    oh, ow = dy.shape[2:]
    dxp = np.zeros((N, C, H + 2 * padding, W + 2 * padding))
    og = O // groups
    for o in range(O):
        g = o // og
        for a in range(kh):
            for b in range(kw):
                dxp[:, g * Cg:(g + 1) * Cg, a:a + stride * oh:stride, b:b + stride * ow:stride] += \
                    np.einsum("nhw,c->nchw", dy[:, o], w[o, :, a, b])
    return dxp[:, :, padding:padding + H, padding:padding + W]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch", (1, 5))
def test_linear_magnitude_matches_dense_reference(kind, batch, rng):
    w = weight(rng, (7, 20), sparsity=0.8)
    fmt = FORMATS[kind].from_dense(w, **OPTIONS[kind])
    mag = fmt.magnitude()
    dense_abs = np.abs(fmt.to_dense())
    check_op(lambda x: linear_forward_format(x, mag, None), lambda x: x @ dense_abs.T,
             [rng.standard_normal((batch, 20))],
             backward=lambda dy, x: linear_backward_format(dy, x, mag, need_weight=False)[0],
             ref_backward=lambda dy, x: dy @ dense_abs, rtol=TIGHT, grad_rtol=TIGHT, fd=False,
             what=f"|W| linear {kind}")


@pytest.mark.parametrize("kind", KINDS)
def test_magnitude_is_float32_too(kind, rng):
    w = weight(rng, (6, 12))
    fmt = FORMATS[kind].from_dense(w, **OPTIONS[kind]).astype(np.float32)
    x = rng.random((3, 12)).astype(np.float32)
    y = linear_forward_format(x, fmt.magnitude(), None)
    assert y.dtype == np.float32
    assert_close(y, x.astype(np.float64) @ np.abs(fmt.to_dense().astype(np.float64)).T, 1e-6,
                 f"{kind} float32")


# Every registered format, not only the kinds whose kernels are checked above: |W| decoded.
ABS_KINDS = sorted(k for k in FORMATS if k != "binary_latent")


@pytest.mark.parametrize("kind", ABS_KINDS)
def test_every_format_magnitude_decodes_to_abs(kind, rng):
    w = weight(rng, (6, 70), sparsity=0.5).astype(np.float32)
    fmt = FORMATS[kind].from_dense(w)
    before = np.array(fmt.to_dense(), dtype=np.float64)
    got = np.asarray(fmt.magnitude().to_dense(), dtype=np.float64)
    assert_close(got, np.abs(before), TIGHT, f"{kind}: |W|")
    assert_close(np.asarray(fmt.to_dense(), dtype=np.float64), before, 0.0, f"{kind}: W after")


def test_latent_binary_weights_refuse_a_magnitude(rng):
    fmt = FORMATS["binary_latent"].from_dense(weight(rng, (3, 8)).astype(np.float32))
    with pytest.raises(ValueError, match="binary_latent"):
        fmt.magnitude()


# The latent weights of TTQ and INQ get a straight-through estimate, not a derivative: only
# their scales are checked by finite differences.
ESTIMATED = {"ttq_latent": ("weight",), "inq_latent": ("weight",)}


def fixed_zero(fmt):
    """Whether the format's first trainable value is its structural zero (the sparse codebooks'
    centroid 0, which marks pruned weights and fillers and may not move)."""
    return fmt.sparse and fmt.trainable == ("centroids",)


@pytest.mark.parametrize("kind", ABS_KINDS)
def test_magnitude_grads_against_finite_differences(kind, rng):
    """d/dv Σ C ⊙ |W(v)| = magnitude_grads(|W|'s own gradient), by central differences."""
    import copy

    w = weight(rng, (4, 9), sparsity=0.4).astype(np.float32)
    fmt = FORMATS[kind].from_dense(w)
    names = [n for n in fmt.trainable if n not in ESTIMATED.get(kind, ())]
    if not names:
        pytest.skip(f"{kind}: nothing trainable to check")
    c = rng.standard_normal(fmt.shape)
    grads = fmt.magnitude_grads(fmt.magnitude().reduce_dense_grad(c.astype(fmt.dtype)))

    def f(name, values):
        probe = copy.copy(fmt)
        setattr(probe, name, values)
        return float((c * np.abs(np.asarray(probe.to_dense(), dtype=np.float64))).sum())

    for name in names:
        v = np.asarray(getattr(fmt, name), dtype=np.float64)
        free = [i for i in range(v.size) if not (fixed_zero(fmt) and i == 0)]
        want = np.zeros(len(free))
        for j, i in enumerate(free):
            h = 1e-3 * max(abs(v.flat[i]), 1e-2)
            up, down = v.copy(), v.copy()
            up.flat[i] += h
            down.flat[i] -= h
            want[j] = (f(name, up) - f(name, down)) / (2 * h)
        assert_close(np.asarray(grads[name], dtype=np.float64).reshape(-1)[free], want, 1e-3,
                     f"{kind}: d/d{name} Σ C·|W|")
