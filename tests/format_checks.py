"""Checks every quantized weight format's kernels go through: the format against the dense kernels
on its own decoded weight, in float64.

``check_conv_format`` / ``check_linear_format`` run a format's forward and backward and the dense
kernels (``conv2d_forward_dense`` … , themselves tested against SciPy and torch) on
``fmt.to_dense()``: outputs, dx and dbias must agree, and the format's trainable gradients must
equal ``reduce_ref(fmt, dW)`` — the test's own NumPy rebuild of them from the dense dL/dW and
the format's unpacked structure, sharing no code with the format's ``reduce_dense_grad``
(which is checked against it too). ``tests/engine/formats/test_formats.py`` does the same for
the Deep Compression formats.

Imported as ``from format_checks import ...`` (``tests/`` is on pytest's ``pythonpath``).
"""

import numba
import numpy as np
from helpers import assert_close

from robustcnn.engine.conv import (conv2d_backward_dense, conv2d_backward_format,
                                   conv2d_forward_dense, conv2d_forward_format, conv2d_geometry)
from robustcnn.engine.linear import (linear_backward_dense, linear_backward_format,
                                     linear_forward_dense, linear_forward_format)

# Integer sums are exact; the float paths agree with BLAS to a few ulps of the scale.
TIGHT = 1e-12
# Enough examples that every thread gets more than one (the backward splits the batch).
MANY = numba.config.NUMBA_NUM_THREADS + 3

# (id, N, C, H, W, O, kh, kw, geometry)
CONV_CASES = [
    ("basic", 2, 3, 8, 8, 4, 3, 3, dict(padding=1)),
    ("stride2", 2, 4, 9, 9, 6, 3, 3, dict(stride=2)),
    ("stride_pad_hw", 2, 3, 9, 8, 5, 3, 2, dict(stride=(2, 3), padding=(1, 0))),
    ("dilation", 2, 3, 10, 9, 4, 3, 3, dict(dilation=2, padding=2)),
    ("groups2", 2, 4, 7, 7, 6, 3, 3, dict(groups=2, padding=1)),
    ("depthwise", 2, 6, 7, 7, 6, 3, 3, dict(groups=6, padding=1)),
    ("pointwise", 2, 6, 5, 5, 4, 1, 1, {}),
    ("wide_k", 2, 9, 6, 6, 7, 3, 3, dict(padding=1)),  # K = 81: five 16-value blocks + 1
    ("lenet_conv1", 3, 1, 12, 12, 5, 5, 5, {}),  # K = 25
    ("batch1", 1, 3, 8, 7, 5, 3, 3, dict(padding=1)),
    (f"batch{MANY}", MANY, 3, 6, 6, 4, 3, 3, dict(padding=1)),
    ("single_pixel_padded", 2, 3, 1, 1, 2, 3, 3, dict(padding=1)),
]
CONV = {c[0]: c for c in CONV_CASES}
# (O, I): tails of every length mod 16, one block, more rows than a tile or a chunk
LINEAR_SHAPES = [(1, 1), (7, 13), (5, 16), (130, 33), (9, 100), (64, 257)]


def conv_setup(case, rng):
    """(x, bias, geometry) of a CONV_CASES entry, x standard normal."""
    _, N, C, H, W, O, kh, kw, g = case
    geom = conv2d_geometry((C, H, W), (O, C // g.get("groups", 1), kh, kw), g.get("stride", 1),
                           g.get("padding", 0), g.get("dilation", 1), g.get("groups", 1))
    return rng.standard_normal((N, C, H, W)), rng.standard_normal(O), geom


def assert_grads(actual, expected, what, rtol=TIGHT):
    assert set(actual) == set(expected), f"{what}: gradient names {sorted(actual)}, " \
                                         f"expected {sorted(expected)}"
    for k in expected:
        assert_close(actual[k], expected[k], rtol, f"{what} d{k}")
        assert actual[k].shape == expected[k].shape


def check_conv_format(fmt, x, b, geom, reduce_ref, what, rtol=TIGHT):
    """Forward, dx, dbias and the trainable gradients of ``fmt`` against the dense kernels on
    ``fmt.to_dense()``; → (y, dx, grads)."""
    w = fmt.to_dense()
    y = conv2d_forward_format(x, fmt, b, geom)
    assert y.dtype == x.dtype and y.flags.c_contiguous
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


def check_linear_format(fmt, x, b, reduce_ref, what, rtol=TIGHT):
    """As ``check_conv_format`` for an inner product (``b`` may be None)."""
    w = fmt.to_dense().reshape(fmt.rows, fmt.cols)
    y = linear_forward_format(x, fmt, b)
    assert y.dtype == x.dtype
    assert_close(y, linear_forward_dense(x, w, b), rtol, f"{what} forward")
    dy = np.random.default_rng(7).standard_normal(y.shape).astype(x.dtype)
    dx, grads, db = linear_backward_format(dy, x, fmt)
    dx_ref, dw_ref, db_ref = linear_backward_dense(dy, x, w)
    assert_close(dx, dx_ref, rtol, f"{what} dx")
    assert_close(db, db_ref, rtol, f"{what} dbias")
    want = reduce_ref(fmt, dw_ref.reshape(fmt.shape))
    assert_grads(grads, want, what, rtol)
    assert_grads(fmt.reduce_dense_grad(dw_ref.reshape(fmt.shape)), want,
                 f"{what} reduce_dense_grad", rtol)
    return y, dx, grads


def skewed_codebook_weight(rng, shape, sparsity=0.8, levels=15, skew=1.0):
    """A weight of ``levels`` values, value k drawn with probability ∝ skew^k, ``sparsity``
    zeros: skewed codes, so that entropy coding pays (the rans and cm tests)."""
    values = np.sort(rng.uniform(0.1, 1.0, levels)) * rng.choice([-1.0, 1.0], levels)
    p = skew ** np.arange(levels)
    w = rng.choice(values, size=int(np.prod(shape)), p=p / p.sum())
    w[rng.random(w.size) < sparsity] = 0
    return w.reshape(shape)


def sparse_centroid_sums(fmt, dweight):
    """The reference centroid gradient of a sparse codebook: each stored entry's dW summed
    into its code (code 0, the zeros, gets none)."""
    codes, _, positions = fmt.entries()
    g = np.bincount(codes, weights=np.asarray(dweight, np.float64).reshape(-1)[positions],
                    minlength=fmt.centroids.size)
    g[0] = 0
    return {"centroids": g}
