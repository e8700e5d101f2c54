"""Normalisation layers, forward and backward: LRN across and within channels (Caffe); batch
norm for inference (running statistics, with Caffe's Scale folded in), which can also be folded
into the convolution before it, and for training (batch statistics, Ioffe & Szegedy 2015);
Caffe's Scale on its own (a per-channel factor and bias).

LRN, with n = local_size (odd) and the window W(c) = [c − (n−1)/2, c + (n−1)/2] ∩ [0, C):

    scale[c] = k + (α / n) · Σ_{c' ∈ W(c)} x[c']²,        y[c] = x[c] · scale[c]^(−β)
    dx[c] = dy[c] · scale[c]^(−β) − (2αβ / n) · x[c] · Σ_{c' ∈ W(c)} dy[c'] · y[c'] / scale[c']
"""

import numpy as np
from numba import njit, prange

from ._args import float_array, where
from ._jit import JIT, JIT_PARALLEL


@njit(**JIT_PARALLEL)
def lrn_forward_nchw(x, local_size, alpha, beta, k, y, scale):
    # x, y, scale: (N, C, P) with P = H·W; scale is kept for the backward (see module docstring)
    N, C, P = x.shape
    half = (local_size - 1) // 2
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        s = scale[n, c]
        s[:] = 0.0
        for c2 in range(max(c - half, 0), min(c + half + 1, C)):
            v = x[n, c2]
            for p in range(P):
                s[p] += v[p] * v[p]
        for p in range(P):
            s[p] = k + alpha / local_size * s[p]
            y[n, c, p] = x[n, c, p] * s[p] ** -beta


@njit(**JIT_PARALLEL)
def lrn_backward_nchw(dy, x, y, scale, local_size, alpha, beta, dx):
    # dy, x, y, scale, dx: (N, C, P); dx written in full (see module docstring)
    N, C, P = x.shape
    half = (local_size - 1) // 2
    factor = 2.0 * alpha * beta / local_size
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        acc = np.zeros(P, dtype=dx.dtype)
        for c2 in range(max(c - half, 0), min(c + half + 1, C)):
            for p in range(P):
                acc[p] += dy[n, c2, p] * y[n, c2, p] / scale[n, c2, p]
        for p in range(P):
            dx[n, c, p] = dy[n, c, p] * scale[n, c, p] ** -beta - factor * x[n, c, p] * acc[p]


@njit(**JIT_PARALLEL)
def channel_affine_nchw(x, a, b, y):
    # x, y: (N, C, P); a, b: (C,);  y[n, c, p] = a[c] · x[n, c, p] + b[c]
    N, C, P = x.shape
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for p in range(P):
            y[n, c, p] = a[c] * x[n, c, p] + b[c]


def lrn_check(local_size, alpha, beta, k, at):
    """Validate LRN hyper-parameters (Caffe requires an odd local_size)."""
    if not isinstance(local_size, (int, np.integer)) or isinstance(local_size, bool) \
            or local_size < 1 or local_size % 2 == 0:
        raise ValueError(f"{at}: local_size must be a positive odd integer, got {local_size!r}")
    for label, v in (("alpha", alpha), ("beta", beta), ("k", k)):
        if not np.isfinite(v):
            raise ValueError(f"{at}: {label} must be finite, got {v!r}")
    if k <= 0:
        raise ValueError(f"{at}: k must be > 0 so that the scale stays positive, got {k!r}")
    if alpha < 0:
        raise ValueError(f"{at}: alpha must be >= 0, got {alpha!r}")
    return int(local_size), float(alpha), float(beta), float(k)


def flat_nchw(shape):
    """(N, C, …) → the (N, C, P) shape the per-channel kernels take, P the product of the
    spatial axes (1 for (N, C)); not -1, which reshape cannot infer when N = 0."""
    return shape[:2] + (int(np.prod(shape[2:])),)


def lrn_forward_dense(x, local_size, alpha, beta, k):
    """LRN on checked arguments → (y, scale), both (N, C, H, W)."""
    flat = flat_nchw(x.shape)
    y = np.empty_like(x)
    scale = np.empty_like(x)
    lrn_forward_nchw(x.reshape(flat), local_size, alpha, beta, k, y.reshape(flat),
                     scale.reshape(flat))
    return y, scale


def lrn_backward_dense(dy, x, y, scale, local_size, alpha, beta):
    """Gradient of LRN w.r.t. x on checked arguments."""
    dx = np.empty_like(x)
    flat = flat_nchw(x.shape)
    lrn_backward_nchw(dy.reshape(flat), x.reshape(flat), y.reshape(flat), scale.reshape(flat),
                      local_size, alpha, beta, dx.reshape(flat))
    return dx


def lrn_forward(x, local_size=5, alpha=1e-4, beta=0.75, k=1.0, *, name="lrn"):
    """Local response normalisation across channels (Caffe's ACROSS_CHANNELS) of (N, C, H, W)."""
    at = where(name, "LRN")
    x = float_array(x, "input", at, ndim=4)
    return lrn_forward_dense(x, *lrn_check(local_size, alpha, beta, k, at))[0]


def lrn_backward(dy, x, local_size=5, alpha=1e-4, beta=0.75, k=1.0, *, name="lrn"):
    """Gradient of ``lrn_forward`` w.r.t. x."""
    at = where(name, "LRN")
    x = float_array(x, "input", at, ndim=4)
    dy = float_array(dy, "output gradient", at, ndim=4, dtype=x.dtype)
    if dy.shape != x.shape:
        raise ValueError(f"{at}: output gradient shape {dy.shape} does not match the input {x.shape}")
    local_size, alpha, beta, k = lrn_check(local_size, alpha, beta, k, at)
    y, scale = lrn_forward_dense(x, local_size, alpha, beta, k)
    return lrn_backward_dense(dy, x, y, scale, local_size, alpha, beta)


# ---------------------------------------------------------------------------------------------
# LRN within each channel (Caffe's WITHIN_CHANNEL), n = local_size (odd), window n×n:
#
#     u[c, i, j] = 1 + (α / n²) · Σ_{|di|, |dj| ≤ (n−1)/2} x[c, i+di, j+dj]²   (zero outside)
#     y = x · u^(−β)          (Caffe ignores k here; it builds this from AVE pooling and Power)
#     dx[c, p] = dy · u^(−β) − (2αβ / n²) · x[c, p] · Σ_{q ∈ W(p)} dy[c, q] · y[c, q] / u[c, q]


@njit(**JIT)
def _box_sum(plane, half, out):
    # plane, out: (H, W);  out[i, j] = Σ plane over the (2·half+1)² window around (i, j)
    H, W = plane.shape
    for i in range(H):
        for j in range(W):
            acc = 0.0
            for a in range(max(i - half, 0), min(i + half + 1, H)):
                for b in range(max(j - half, 0), min(j + half + 1, W)):
                    acc += plane[a, b]
            out[i, j] = acc


@njit(**JIT_PARALLEL)
def lrn_within_forward_nchw(x, local_size, alpha, beta, y, scale):
    # x, y, scale: (N, C, H, W); scale = u is kept for the backward (see above)
    N, C, H, W = x.shape
    half = (local_size - 1) // 2
    factor = alpha / (local_size * local_size)
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        _box_sum(x[n, c] * x[n, c], half, scale[n, c])
        for i in range(H):
            for j in range(W):
                u = 1.0 + factor * scale[n, c, i, j]
                scale[n, c, i, j] = u
                y[n, c, i, j] = x[n, c, i, j] * u ** -beta


@njit(**JIT_PARALLEL)
def lrn_within_backward_nchw(dy, x, y, scale, local_size, alpha, beta, dx):
    # dy, x, y, scale, dx: (N, C, H, W); dx written in full (see above)
    N, C, H, W = x.shape
    half = (local_size - 1) // 2
    factor = 2.0 * alpha * beta / (local_size * local_size)
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        ratio = dy[n, c] * y[n, c] / scale[n, c]
        acc = np.empty((H, W), dtype=dx.dtype)
        _box_sum(ratio, half, acc)
        for i in range(H):
            for j in range(W):
                dx[n, c, i, j] = dy[n, c, i, j] * scale[n, c, i, j] ** -beta \
                    - factor * x[n, c, i, j] * acc[i, j]


def lrn_within_check(local_size, alpha, beta, at):
    """Validate WITHIN_CHANNEL LRN hyper-parameters (k plays no part)."""
    local_size, alpha, beta, _ = lrn_check(local_size, alpha, beta, 1.0, at)
    return local_size, alpha, beta


def lrn_within_forward_dense(x, local_size, alpha, beta):
    """Within-channel LRN on checked (N, C, H, W) arguments → (y, scale)."""
    y = np.empty_like(x)
    scale = np.empty_like(x)
    lrn_within_forward_nchw(x, local_size, alpha, beta, y, scale)
    return y, scale


def lrn_within_backward_dense(dy, x, y, scale, local_size, alpha, beta):
    """Gradient of within-channel LRN w.r.t. x on checked arguments."""
    dx = np.empty_like(x)
    lrn_within_backward_nchw(dy, x, y, scale, local_size, alpha, beta, dx)
    return dx


def lrn_within_forward(x, local_size=3, alpha=5e-5, beta=0.75, *, name="lrn"):
    """Local response normalisation within each channel (Caffe's WITHIN_CHANNEL) of
    (N, C, H, W), over local_size × local_size windows."""
    at = where(name, "LRN")
    x = float_array(x, "input", at, ndim=4)
    return lrn_within_forward_dense(x, *lrn_within_check(local_size, alpha, beta, at))[0]


def lrn_within_backward(dy, x, local_size=3, alpha=5e-5, beta=0.75, *, name="lrn"):
    """Gradient of ``lrn_within_forward`` w.r.t. x."""
    at = where(name, "LRN")
    x = float_array(x, "input", at, ndim=4)
    dy = float_array(dy, "output gradient", at, ndim=4, dtype=x.dtype)
    if dy.shape != x.shape:
        raise ValueError(f"{at}: output gradient shape {dy.shape} does not match the input "
                         f"{x.shape}")
    args = lrn_within_check(local_size, alpha, beta, at)
    y, scale = lrn_within_forward_dense(x, *args)
    return lrn_within_backward_dense(dy, x, y, scale, *args)


# ---------------------------------------------------------------------------------------------
# Batch norm (inference)


def batch_norm_coefficients(mean, var, gamma=None, beta=None, eps=1e-5):
    """Per-channel (a, b) with BN(x) = a·x + b:  a = γ / √(var + ε),  b = β − mean · a."""
    a = 1.0 / np.sqrt(var + eps)
    if gamma is not None:
        a = a * gamma
    b = -mean * a
    if beta is not None:
        b = b + beta
    return a.astype(mean.dtype, copy=False), b.astype(mean.dtype, copy=False)


def _bn_check(x, mean, var, gamma, beta, eps, at, stats=True):
    x = float_array(x, "input", at)
    if x.ndim not in (2, 4):
        raise ValueError(f"{at}: input must be (N, C) or (N, C, H, W), got shape {x.shape}")
    if not stats:  # training: the statistics come from the batch
        if not (np.isfinite(eps) and eps > 0):
            raise ValueError(f"{at}: eps must be finite and > 0 with batch statistics, got {eps!r}")
        mean = var = np.zeros(x.shape[1], x.dtype)
    C = x.shape[1]
    arrays = {}
    for label, v in (("mean", mean), ("var", var), ("gamma", gamma), ("beta", beta)):
        if v is None and label in ("mean", "var"):
            raise ValueError(f"{at}: {label} is required")
        if v is not None:
            v = float_array(v, label, at, ndim=1, dtype=x.dtype)
            if v.shape != (C,):
                raise ValueError(f"{at}: {label} shape {v.shape} does not match channels {C}")
        arrays[label] = v
    if (arrays["var"] < 0).any():
        raise ValueError(f"{at}: var has negative entries")
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"{at}: eps must be finite and >= 0, got {eps!r}")
    if eps == 0 and (arrays["var"] == 0).any():
        raise ValueError(f"{at}: var has zeros and eps is 0 (division by zero)")
    return x, arrays


def batch_norm_forward(x, mean, var, gamma=None, beta=None, eps=1e-5, *, name="batch_norm"):
    """Inference batch norm with running statistics: γ·(x − mean)/√(var + ε) + β per channel.

    ``x`` is (N, C, H, W) or (N, C). Caffe's BatchNorm + Scale pair is this with γ, β from Scale
    (and mean/var already divided by Caffe's moving-average factor).
    """
    x, p = _bn_check(x, mean, var, gamma, beta, eps, where(name, "BatchNorm"))
    a, b = batch_norm_coefficients(p["mean"], p["var"], p["gamma"], p["beta"], eps)
    y = np.empty_like(x)
    flat = flat_nchw(x.shape)
    channel_affine_nchw(x.reshape(flat), a, b, y.reshape(flat))
    return y


def batch_norm_backward(dy, x, mean, var, gamma=None, eps=1e-5, *, name="batch_norm"):
    """Gradients of ``batch_norm_forward`` → (dx, dgamma, dbeta):

        dx = dy · γ / √(var + ε),   dγ = Σ dy · (x − mean) / √(var + ε),   dβ = Σ dy
    """
    at = where(name, "BatchNorm")
    x, p = _bn_check(x, mean, var, gamma, None, eps, at)
    dy = float_array(dy, "output gradient", at, dtype=x.dtype)
    if dy.shape != x.shape:
        raise ValueError(f"{at}: output gradient shape {dy.shape} does not match the input {x.shape}")
    a, _ = batch_norm_coefficients(p["mean"], p["var"], p["gamma"], None, eps)
    flat = flat_nchw(x.shape)
    dx = np.empty_like(x)
    channel_affine_nchw(dy.reshape(flat), a, np.zeros_like(a), dx.reshape(flat))
    inv_std = (1.0 / np.sqrt(p["var"] + eps)).astype(x.dtype)
    xhat = (x.reshape(flat) - p["mean"][:, None]) * inv_std[:, None]
    dgamma = (dy.reshape(flat) * xhat).sum(axis=(0, 2))
    dbeta = dy.reshape(flat).sum(axis=(0, 2))
    return dx, dgamma, dbeta


# ---------------------------------------------------------------------------------------------
# Batch norm (training): Ioffe & Szegedy 2015, "Batch Normalization: Accelerating Deep Network
# Training by Reducing Internal Covariate Shift", Algorithm 1. Per channel c, over the M = N·P
# values of the batch (N examples, P = H·W positions):
#
#     μ = Σ x / M,   σ² = Σ (x − μ)² / M  (biased),   x̂ = (x − μ) / √(σ² + ε),   y = γ·x̂ + β
#     dβ = Σ dy,   dγ = Σ dy·x̂,   dx = (γ / √(σ² + ε)) · (dy − dβ/M − x̂ · dγ/M)
#
# The running statistics follow running ← momentum · running + (1 − momentum) · batch value,
# with the unbiased variance σ²·M/(M − 1) (torch, Caffe; σ² itself when M = 1, as Caffe).


@njit(**JIT_PARALLEL)
def batch_norm_train_forward_nchw(x, gamma, beta, eps, y, mean, var):
    # x, y: (N, C, P); gamma, beta, mean, var: (C,); writes y, the batch mean and biased var
    N, C, P = x.shape
    M = N * P
    for c in prange(C):
        s = np.float64(0.0)  # float64 sums, also for float32 data (and in plain Python)
        for n in range(N):
            for p in range(P):
                s += x[n, c, p]
        m = s / M
        s2 = np.float64(0.0)  # two passes: no cancellation in Σx² − Mμ²
        for n in range(N):
            for p in range(P):
                d = x[n, c, p] - m
                s2 += d * d
        v = s2 / M
        a = gamma[c] / np.sqrt(v + eps)
        b = beta[c] - m * a
        for n in range(N):
            for p in range(P):
                y[n, c, p] = a * x[n, c, p] + b
        mean[c] = m
        var[c] = v


@njit(**JIT_PARALLEL)
def batch_norm_train_backward_nchw(dy, x, mean, var, gamma, eps, need_input, dx, dgamma, dbeta):
    # dy, x, dx: (N, C, P); mean, var (the batch's, biased), gamma, dgamma, dbeta: (C,)
    # dβ += Σ dy,  dγ += Σ dy·x̂,  dx = (γ/σ)·(dy − Σ dy/M − x̂·Σ dy·x̂/M) (in full if need_input)
    N, C, P = x.shape
    M = N * P
    for c in prange(C):
        m = mean[c]
        inv_std = 1.0 / np.sqrt(var[c] + eps)
        sdy = np.float64(0.0)
        sdyx = np.float64(0.0)
        for n in range(N):
            for p in range(P):
                g = dy[n, c, p]
                sdy += g
                sdyx += g * (x[n, c, p] - m) * inv_std
        dbeta[c] += sdy
        dgamma[c] += sdyx
        if need_input:
            k = gamma[c] * inv_std
            mdy = sdy / M
            mdyx = sdyx / M
            for n in range(N):
                for p in range(P):
                    xhat = (x[n, c, p] - m) * inv_std
                    dx[n, c, p] = k * (dy[n, c, p] - mdy - xhat * mdyx)


def batch_norm_train_forward_dense(x, gamma, beta, eps):
    """Training batch norm on checked arguments (``gamma``/``beta`` (C,) arrays of x's dtype)
    → (y, mean, var) with the batch's per-channel mean and biased variance. An empty batch
    gives an empty y and mean 0, var 1."""
    C = x.shape[1]
    y = np.empty_like(x)
    mean = np.zeros(C, dtype=x.dtype)
    var = np.ones(C, dtype=x.dtype)
    if x.size:
        flat = flat_nchw(x.shape)
        batch_norm_train_forward_nchw(x.reshape(flat), gamma, beta, eps, y.reshape(flat), mean,
                                      var)
    return y, mean, var


def batch_norm_train_backward_dense(dy, x, mean, var, gamma, eps, need_input=True):
    """Gradients of training batch norm on checked arguments → (dx or None, dgamma, dbeta)."""
    C = x.shape[1]
    dgamma = np.zeros(C, dtype=x.dtype)
    dbeta = np.zeros(C, dtype=x.dtype)
    dx = np.empty_like(x) if need_input else np.empty((0, C, 0), dtype=x.dtype)
    if x.size:
        flat = flat_nchw(x.shape)
        batch_norm_train_backward_nchw(dy.reshape(flat), x.reshape(flat), mean, var, gamma, eps,
                                       need_input, dx.reshape(flat) if need_input else dx,
                                       dgamma, dbeta)
    return (dx if need_input else None), dgamma, dbeta


def batch_norm_update_running(running_mean, running_var, mean, var, count, momentum):
    """In place: running ← momentum · running + (1 − momentum) · batch statistic, the variance
    unbiased (× count/(count − 1) when count > 1). ``count`` = N·H·W; nothing happens at 0."""
    if count < 1:
        return
    unbiased = var * (count / (count - 1) if count > 1 else 1.0)
    running_mean *= momentum
    running_mean += (1.0 - momentum) * mean
    running_var *= momentum
    running_var += (1.0 - momentum) * unbiased


def _bn_train_check(x, gamma, beta, eps, at):
    x, p = _bn_check(x, None, None, gamma, beta, eps, at, stats=False)
    C = x.shape[1]
    gamma = np.ones(C, x.dtype) if p["gamma"] is None else p["gamma"]
    beta = np.zeros(C, x.dtype) if p["beta"] is None else p["beta"]
    return x, gamma, beta


def batch_norm_train_forward(x, gamma=None, beta=None, eps=1e-5, *, name="batch_norm"):
    """Training batch norm of ``x`` (N, C, H, W) or (N, C) with the batch's statistics →
    (y, mean, var): y = γ·(x − μ)/√(σ² + ε) + β per channel, μ and the biased σ² over N and
    the spatial axes (see ``batch_norm_update_running`` for the running statistics)."""
    x, gamma, beta = _bn_train_check(x, gamma, beta, eps, where(name, "BatchNorm"))
    return batch_norm_train_forward_dense(x, gamma, beta, float(eps))


def batch_norm_train_backward(dy, x, gamma=None, eps=1e-5, *, name="batch_norm"):
    """Gradients of ``batch_norm_train_forward`` through the batch statistics → (dx, dγ, dβ)."""
    at = where(name, "BatchNorm")
    x, gamma, _ = _bn_train_check(x, gamma, None, eps, at)
    dy = float_array(dy, "output gradient", at, dtype=x.dtype)
    if dy.shape != x.shape:
        raise ValueError(f"{at}: output gradient shape {dy.shape} does not match the input {x.shape}")
    y, mean, var = batch_norm_train_forward_dense(x, gamma, np.zeros_like(gamma), float(eps))
    return batch_norm_train_backward_dense(dy, x, mean, var, gamma, float(eps))


def fold_batch_norm(weight, bias, mean, var, gamma=None, beta=None, eps=1e-5):
    """Fold an inference batch norm into the convolution or linear layer before it.

    Returns (weight', bias') with conv(x, W') + b' = BN(conv(x, W) + b); ``bias`` may be None.
    """
    a, b = batch_norm_coefficients(mean, var, gamma, beta, eps)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    new_weight = (weight * a.reshape(shape)).astype(weight.dtype)
    new_bias = b if bias is None else a * bias + b
    return new_weight, new_bias.astype(weight.dtype)


# ---------------------------------------------------------------------------------------------
# Scale (Caffe's Scale layer: a learned per-channel factor and optional bias, BatchNorm's affine)


def _scale_check(x, gamma, beta, at):
    x = float_array(x, "input", at)
    if x.ndim < 2:
        raise ValueError(f"{at}: input must be (N, C, …), got shape {x.shape}")
    C = x.shape[1]
    gamma = float_array(gamma, "scale", at, ndim=1, dtype=x.dtype)
    if gamma.shape != (C,):
        raise ValueError(f"{at}: scale shape {gamma.shape} does not match channels {C}")
    if beta is not None:
        beta = float_array(beta, "bias", at, ndim=1, dtype=x.dtype)
        if beta.shape != (C,):
            raise ValueError(f"{at}: bias shape {beta.shape} does not match channels {C}")
    return x, gamma, beta


def scale_forward(x, gamma, beta=None, *, name="scale"):
    """y[n, c, …] = γ[c] · x[n, c, …] (+ β[c]) for ``x`` (N, C, …)."""
    x, gamma, beta = _scale_check(x, gamma, beta, where(name, "Scale"))
    y = np.empty_like(x)
    flat = flat_nchw(x.shape)
    channel_affine_nchw(x.reshape(flat), gamma, np.zeros_like(gamma) if beta is None else beta,
                        y.reshape(flat))
    return y


def scale_backward_dense(dy, x, gamma, need_input, need_params):
    """Gradients of the Scale layer on checked arguments → (dx, dγ, dβ) (None where not needed):

        dx = γ[c] · dy,   dγ[c] = Σ_{n, …} dy · x,   dβ[c] = Σ_{n, …} dy
    """
    flat = flat_nchw(dy.shape)
    dx = dgamma = dbeta = None
    if need_input:
        dx = np.empty(dy.shape, dy.dtype)
        channel_affine_nchw(dy.reshape(flat), gamma, np.zeros_like(gamma), dx.reshape(flat))
    if need_params:
        dgamma = (dy.reshape(flat) * x.reshape(flat)).sum(axis=(0, 2))
        dbeta = dy.reshape(flat).sum(axis=(0, 2))
    return dx, dgamma, dbeta


def scale_backward(dy, x, gamma, *, name="scale"):
    """Gradients of ``scale_forward`` → (dx, dγ, dβ)."""
    at = where(name, "Scale")
    x, gamma, _ = _scale_check(x, gamma, None, at)
    dy = float_array(dy, "output gradient", at, dtype=x.dtype)
    if dy.shape != x.shape:
        raise ValueError(f"{at}: output gradient shape {dy.shape} does not match the input "
                         f"{x.shape}")
    return scale_backward_dense(dy, x, gamma, True, True)
