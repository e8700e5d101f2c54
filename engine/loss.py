"""Softmax and the fused, numerically stable softmax + cross-entropy, forward and backward.

    loss[n] = log Σ_k exp(z[n, k]) − z[n, y_n]  = logsumexp(z[n]) − z[n, y_n]
    dz[n, k] = softmax(z[n])_k − [k = y_n]            (the gradient of loss[n] w.r.t. z[n])
    with dz[n, y_n] computed as −Σ_{k≠y_n} softmax(z[n])_k, which keeps it when p_y rounds to 1.

Subtracting the row maximum before exp keeps every exponent ≤ 0: no overflow for any finite z.
"""

import numpy as np
from numba import njit, prange

from ._args import float_array, labels_array, where
from ._jit import JIT_PARALLEL


@njit(**JIT_PARALLEL)
def softmax_cross_entropy_rows(z, labels, loss, dz):
    # z, dz: (N, K); labels: (N,) int64 in [0, K); loss: (N,); every cell written
    N, K = z.shape
    for n in prange(N):
        m = z[n, 0]
        for k in range(1, K):
            m = max(m, z[n, k])
        total = 0.0
        for k in range(K):
            e = np.exp(z[n, k] - m)
            dz[n, k] = e
            total += e
        loss[n] = np.log(total) + m - z[n, labels[n]]
        others = 0.0
        for k in range(K):
            dz[n, k] /= total
            if k != labels[n]:
                others += dz[n, k]
        # p_y − 1 = −Σ_{k≠y} p_k, summed from the small terms: p_y − 1 would round to 0 in
        # float32 once p_y rounds to 1, and drop the true class's term from the gradient.
        dz[n, labels[n]] = -others


@njit(**JIT_PARALLEL)
def softmax_rows(z, p):
    # z, p: (N, K);  p[n] = exp(z[n] − max z[n]) / Σ exp(z[n] − max z[n])
    N, K = z.shape
    for n in prange(N):
        m = z[n, 0]
        for k in range(1, K):
            m = max(m, z[n, k])
        total = 0.0
        for k in range(K):
            p[n, k] = np.exp(z[n, k] - m)
            total += p[n, k]
        for k in range(K):
            p[n, k] /= total


def softmax_cross_entropy(logits, labels, *, name="loss"):
    """Per-example cross-entropy of softmax(logits) against integer labels → (loss (N,), dlogits (N, K)).

    ``dlogits[n]`` is the gradient of ``loss[n]`` (not of the mean): divide by N for a mean loss.
    """
    at = where(name, "SoftmaxWithLoss")
    z = float_array(logits, "logits", at, ndim=2)
    labels = labels_array(labels, z.shape[0], z.shape[1], at)
    loss = np.empty(z.shape[0], dtype=z.dtype)
    dz = np.empty_like(z)
    if z.shape[0]:
        softmax_cross_entropy_rows(z, labels, loss, dz)
    return loss, dz


def softmax_forward(x, *, name="softmax"):
    """Softmax over axis 1 of (N, K) → probabilities."""
    z = float_array(x, "input", where(name, "Softmax"), ndim=2)
    p = np.empty_like(z)
    softmax_rows(z, p)
    return p


def softmax_backward(dy, y, *, name="softmax"):
    """Gradient of softmax given its output y:  dx = y ⊙ (dy − Σ_k dy ⊙ y)."""
    at = where(name, "Softmax")
    y = float_array(y, "output", at, ndim=2)
    dy = float_array(dy, "output gradient", at, ndim=2, dtype=y.dtype)
    if dy.shape != y.shape:
        raise ValueError(f"{at}: output gradient shape {dy.shape} does not match the output {y.shape}")
    return y * (dy - (dy * y).sum(axis=1, keepdims=True))
