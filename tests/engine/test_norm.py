"""engine/norm.py: LRN across channels (Caffe) and inference batch norm, forward and backward;
folding a batch norm into the convolution or linear layer before it."""

import numpy as np
import pytest
from helpers import F32, F64, assert_close, check_op

from robustcnn.engine import (batch_norm_backward, batch_norm_forward, conv2d_forward,
                              fold_batch_norm, linear_forward, lrn_backward, lrn_forward)

# ---------------------------------------------------------------------------------------------
# LRN reference (float64, loops over channels)


def lrn_scale_ref(x, n, alpha, k):
    """s[c] = k + (α/n) · Σ x[c']² over |c' − c| ≤ (n−1)/2 inside [0, C) (zeros outside)."""
    C, half = x.shape[1], (n - 1) // 2
    s = np.empty_like(x)
    for c in range(C):
        s[:, c] = k + alpha / n * sum(x[:, c2] ** 2 for c2 in range(C) if abs(c2 - c) <= half)
    return s


def lrn_ref(x, n, alpha, beta, k):
    return x * lrn_scale_ref(x, n, alpha, k) ** -beta


def lrn_ref_backward(dy, x, n, alpha, beta, k):
    """y_c = x_c · s_c^−β, so ∂y_c/∂x_j = [c = j] s_c^−β − β x_c s_c^(−β−1) · (α/n) · 2 x_j
    for every c whose window holds j."""
    C, half = x.shape[1], (n - 1) // 2
    s = lrn_scale_ref(x, n, alpha, k)
    dx = dy * s ** -beta
    for j in range(C):
        for c in range(C):
            if abs(c - j) <= half:
                dx[:, j] -= (dy[:, c] * beta * x[:, c] * s[:, c] ** (-beta - 1)
                             * alpha / n * 2 * x[:, j])
    return dx


# (local_size, alpha, beta, k, C): Caffe's defaults, strong normalisation, C < local_size.
LRN_CASES = [
    (5, 1e-4, 0.75, 1.0, 8),
    (1, 0.5, 0.75, 2.0, 3),
    (3, 0.9, 0.6, 1.5, 6),
    (5, 0.8, 0.75, 1.0, 7),
    (5, 1.2, 0.9, 0.7, 2),
    (7, 2.0, 1.5, 1.0, 3),
    (3, 0.0, 0.75, 1.0, 4),
]


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", LRN_CASES, ids=lambda c: "n{}_a{}_b{}_k{}_C{}".format(*c))
def test_lrn_matches_reference(case, dtype, rng):
    n, alpha, beta, k, C = case
    x = 1.5 * rng.standard_normal((2, C, 3, 4))
    check_op(lambda x: lrn_forward(x, n, alpha, beta, k), lambda x: lrn_ref(x, n, alpha, beta, k),
             [x], backward=lambda dy, x: lrn_backward(dy, x, n, alpha, beta, k),
             ref_backward=lambda dy, x: lrn_ref_backward(dy, x, n, alpha, beta, k),
             dtype=dtype, what=f"lrn(local_size={n})")


def test_lrn_hand_computed():
    # C = 3, local_size 3, alpha 3 (α/n = 1), beta 1, k 1: s = 1 + sum of squares in the window.
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    s = np.array([1 + 1 + 4, 1 + 1 + 4 + 9, 1 + 4 + 9])
    assert_close(lrn_forward(x, 3, 3.0, 1.0, 1.0).ravel(), np.array([1.0, 2.0, 3.0]) / s, 1e-15,
                 "hand-computed LRN")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n,alpha,beta,k,C", [(5, 1e-4, 0.75, 1.0, 16), (3, 0.7, 0.75, 2.0, 5),
                                              (5, 1.0, 0.5, 1.0, 3), (1, 0.3, 1.0, 1.0, 2)])
def test_lrn_matches_torch(n, alpha, beta, k, C, dtype, rng):
    """torch's local_response_norm averages the squares over ``size`` channels (zero padded) and
    then multiplies by alpha: k + alpha · Σ/size, the same α/n as Caffe and robustcnn."""
    torch = pytest.importorskip("torch")
    x = (1.5 * rng.standard_normal((2, C, 4, 5))).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.local_response_norm(tx, n, alpha=alpha, beta=beta, k=k)
    dy = rng.standard_normal(x.shape).astype(dtype)
    (ty * torch.tensor(dy)).sum().backward()
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    assert_close(lrn_forward(x, n, alpha, beta, k), ty.detach().numpy(), rtol, "lrn vs torch")
    assert_close(lrn_backward(dy, x, n, alpha, beta, k), tx.grad.numpy(), rtol,
                 "lrn gradient vs torch")


@pytest.mark.parametrize("local_size", [2, 4, 0, -1, 3.0, "5"])
def test_lrn_rejects_even_or_bad_local_size(local_size, rng):
    x = rng.standard_normal((1, 4, 2, 2))
    with pytest.raises(ValueError,
                       match=r"norm1 \(LRN\): local_size must be a positive odd integer"):
        lrn_forward(x, local_size, name="norm1")
    with pytest.raises(ValueError, match="local_size must be a positive odd integer"):
        lrn_backward(x, x, local_size)


@pytest.mark.parametrize("kwargs,match", [
    (dict(k=0.0), "k must be > 0"),
    (dict(k=-1.0), "k must be > 0"),
    (dict(alpha=-1e-4), "alpha must be >= 0"),
    (dict(alpha=np.nan), "alpha must be finite"),
    (dict(beta=np.inf), "beta must be finite"),
])
def test_lrn_rejects_bad_parameters(kwargs, match, rng):
    with pytest.raises(ValueError, match=match):
        lrn_forward(rng.standard_normal((1, 4, 2, 2)), 5, **kwargs)


def test_lrn_bad_input(rng):
    x = rng.standard_normal((1, 4, 2, 2))
    with pytest.raises(ValueError, match="input must have 4 axes"):
        lrn_forward(x[0])
    with pytest.raises(ValueError, match=r"output gradient shape \(1, 3, 2, 2\) does not match"):
        lrn_backward(x[:, :3], x)
    with pytest.raises(TypeError, match="output gradient is float32"):
        lrn_backward(x.astype(np.float32), x)


# ---------------------------------------------------------------------------------------------
# Batch norm (inference) reference


def bn_ref(x, mean, var, gamma, beta, eps):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if gamma is not None:
        y = y * gamma.reshape(shape)
    if beta is not None:
        y = y + beta.reshape(shape)
    return y


def bn_ref_backward(dy, x, mean, var, gamma, eps):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    axes = (0,) + tuple(range(2, x.ndim))
    inv = 1 / np.sqrt(var.reshape(shape) + eps)
    g = 1.0 if gamma is None else gamma.reshape(shape)
    return dy * g * inv, (dy * (x - mean.reshape(shape)) * inv).sum(axis=axes), dy.sum(axis=axes)


def _bn_params(rng, C):
    return (rng.standard_normal(C), rng.uniform(0.2, 3.0, C), rng.uniform(0.5, 2.0, C),
            rng.standard_normal(C))


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (5, 7), (1, 1, 1, 1)], ids=str)
@pytest.mark.parametrize("eps", [1e-5, 1e-3, 0.0])
def test_batch_norm_matches_reference(shape, eps, dtype, rng):
    mean, var, gamma, beta = _bn_params(rng, shape[1])
    check_op(lambda x, m, v, g, b: batch_norm_forward(x, m, v, g, b, eps),
             lambda x, m, v, g, b: bn_ref(x, m, v, g, b, eps),
             [rng.standard_normal(shape), mean, var, gamma, beta],
             backward=lambda dy, x, m, v, g, b: batch_norm_backward(dy, x, m, v, g, eps),
             ref_backward=lambda dy, x, m, v, g, b: bn_ref_backward(dy, x, m, v, g, eps),
             wrt=(0, 3, 4), dtype=dtype, what="batch_norm")


def test_batch_norm_without_affine(rng):
    mean, var, _, _ = _bn_params(rng, 3)
    check_op(lambda x, m, v: batch_norm_forward(x, m, v),
             lambda x, m, v: bn_ref(x, m, v, None, None, 1e-5),
             [rng.standard_normal((2, 3, 4, 4)), mean, var],
             backward=lambda dy, x, m, v: batch_norm_backward(dy, x, m, v)[0],
             ref_backward=lambda dy, x, m, v: bn_ref_backward(dy, x, m, v, None, 1e-5)[0],
             what="batch_norm without gamma/beta")


def test_batch_norm_bad_input(rng):
    x = rng.standard_normal((2, 3, 4, 4))
    mean, var, gamma, beta = _bn_params(rng, 3)
    with pytest.raises(ValueError,
                       match=r"bn1 \(BatchNorm\): input must be \(N, C\) or \(N, C, H, W\)"):
        batch_norm_forward(x[0], mean, var, name="bn1")
    with pytest.raises(ValueError, match=r"var shape \(2,\) does not match channels 3"):
        batch_norm_forward(x, mean, var[:2])
    with pytest.raises(ValueError, match=r"gamma shape \(4,\) does not match channels 3"):
        batch_norm_forward(x, mean, var, np.ones(4))
    with pytest.raises(ValueError, match="var has negative entries"):
        batch_norm_forward(x, mean, -var)
    with pytest.raises(ValueError, match="var has zeros and eps is 0"):
        batch_norm_forward(x, mean, np.array([1.0, 0.0, 1.0]), eps=0.0)
    with pytest.raises(ValueError, match="eps must be finite and >= 0"):
        batch_norm_forward(x, mean, var, eps=-1e-5)
    with pytest.raises(ValueError, match="mean is required"):
        batch_norm_forward(x, None, var)
    with pytest.raises(TypeError, match="mean is float32 but the input is float64"):
        batch_norm_forward(x, mean.astype(np.float32), var)
    with pytest.raises(ValueError, match="beta has 1 non-finite"):
        batch_norm_forward(x, mean, var, gamma, np.array([0.0, np.nan, 0.0]))
    with pytest.raises(ValueError, match=r"output gradient shape \(2, 3, 4, 3\) does not match"):
        batch_norm_backward(x[..., :3], x, mean, var, gamma)


# ---------------------------------------------------------------------------------------------
# Folding


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("conv_bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_fold_batch_norm_into_conv(conv_bias, affine, dtype, rng):
    x = rng.standard_normal((2, 3, 7, 7)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype) if conv_bias else None
    mean, var, gamma, beta = (p.astype(dtype) for p in _bn_params(rng, 4))
    if not affine:
        gamma = beta = None
    eps = 1e-3
    want = batch_norm_forward(conv2d_forward(x, w, b, stride=2, padding=1), mean, var, gamma,
                              beta, eps)
    w2, b2 = fold_batch_norm(w, b, mean, var, gamma, beta, eps)
    assert w2.dtype == dtype and b2.dtype == dtype and w2.shape == w.shape and b2.shape == (4,)
    got = conv2d_forward(x, w2, b2, stride=2, padding=1)
    assert_close(got, want, 1e-10 if dtype == F64 else 1e-5, "conv ∘ BN vs folded conv")
    assert_close(got, bn_ref(conv2d_forward(x, w, b, stride=2, padding=1).astype(np.float64),
                             *(None if p is None else p.astype(np.float64)
                               for p in (mean, var, gamma, beta)), eps),
                 1e-10 if dtype == F64 else 1e-5, "folded conv vs reference BN")


def test_fold_batch_norm_into_linear(rng):
    x, w, b = rng.standard_normal((5, 6)), rng.standard_normal((3, 6)), rng.standard_normal(3)
    mean, var, gamma, beta = _bn_params(rng, 3)
    w2, b2 = fold_batch_norm(w, b, mean, var, gamma, beta)
    assert_close(linear_forward(x, w2, b2),
                 batch_norm_forward(linear_forward(x, w, b), mean, var, gamma, beta), 1e-10,
                 "linear ∘ BN vs folded linear")


def test_empty_batch(rng):
    # An empty batch passes through (the kernels see (0, C, H·W) views).
    x = np.zeros((0, 4, 3, 3))
    assert lrn_forward(x, 3).shape == x.shape
    assert lrn_backward(x, x, 3).shape == x.shape
    mean, var, gamma, beta = _bn_params(rng, 4)
    assert batch_norm_forward(x, mean, var, gamma, beta).shape == x.shape
    dx, dgamma, dbeta = batch_norm_backward(x, x, mean, var, gamma)
    assert dx.shape == x.shape and not dgamma.any() and not dbeta.any()


# ---------------------------------------------------------------------------------------------
# Scale (Caffe's Scale layer)


def scale_ref(x, gamma, beta):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return x * gamma.reshape(shape) + beta.reshape(shape)


def scale_ref_backward(dy, x, gamma, beta):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    return dy * gamma.reshape(shape), (dy * x).sum(axis=axes), dy.sum(axis=axes)


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 6), (1, 2, 1, 1), (0, 3, 2, 2)])
def test_scale(shape, dtype, rng):
    from robustcnn.engine import scale_backward, scale_forward

    x = rng.standard_normal(shape)
    gamma, beta = rng.uniform(0.5, 2.0, shape[1]), rng.standard_normal(shape[1])
    check_op(scale_forward, scale_ref, [x, gamma, beta],
             backward=lambda dy, x, g, b: scale_backward(dy, x, g),
             ref_backward=scale_ref_backward, wrt=(0, 1, 2), dtype=dtype, what=f"scale{shape}")


def test_scale_bad_input(rng):
    from robustcnn.engine import scale_forward

    x = rng.standard_normal((2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"s1 \(Scale\): scale shape \(4,\) does not match "
                                         r"channels 3"):
        scale_forward(x, np.ones(4), name="s1")
    with pytest.raises(ValueError, match=r"bias shape \(2,\) does not match channels 3"):
        scale_forward(x, np.ones(3), np.ones(2))


# ---------------------------------------------------------------------------------------------
# LRN within channels (Caffe's WITHIN_CHANNEL)


def lrn_within_ref(x, n, alpha, beta):
    """Caffe's construction: AVE pooling of x² (pad (n−1)/2, divisor n²), then (1 + α·avg)^−β."""
    half = (n - 1) // 2
    sq = np.pad(x ** 2, ((0, 0), (0, 0), (half, half), (half, half)))
    H, W = x.shape[2:]
    s = np.zeros_like(x)
    for a in range(n):
        for b in range(n):
            s += sq[:, :, a:a + H, b:b + W]
    return x * (1.0 + alpha / n ** 2 * s) ** -beta


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("n,alpha,beta,shape", [(3, 5e-2, 0.75, (2, 3, 5, 6)),
                                                (5, 0.5, 0.5, (1, 2, 4, 4)),
                                                (1, 1.0, 1.5, (2, 2, 3, 3)),
                                                (3, 0.3, 0.75, (2, 1, 1, 7))])
def test_lrn_within(n, alpha, beta, shape, dtype, rng):
    from robustcnn.engine import lrn_within_backward, lrn_within_forward

    x = rng.standard_normal(shape) * 2
    check_op(lambda x: lrn_within_forward(x, n, alpha, beta),
             lambda x: lrn_within_ref(x, n, alpha, beta), [x],
             backward=lambda dy, x: lrn_within_backward(dy, x, n, alpha, beta),
             dtype=dtype, what=f"lrn_within n={n}")


def test_lrn_within_bad_input(rng):
    from robustcnn.engine import lrn_within_forward

    x = rng.standard_normal((2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"n1 \(LRN\): local_size must be a positive odd"):
        lrn_within_forward(x, 2, name="n1")
    with pytest.raises(ValueError, match="input must have 4 axes"):
        lrn_within_forward(x[0])
