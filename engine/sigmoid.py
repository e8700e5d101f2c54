"""Sigmoid-shaped activations, forward and backward: the logistic sigmoid, the hard sigmoid
(a clipped line, Courbariaux et al. 2015; ONNX's HardSigmoid with its alpha and beta) and the
hard swish of MobileNetV3 (Howard et al. 2019, "Searching for MobileNetV3"):

    sigmoid(x)      = 1 / (1 + e^−x)
    hard_sigmoid(x) = max(0, min(1, α·x + β))                 (ONNX defaults α = 0.2, β = 0.5)
    hard_swish(x)   = x · max(0, min(1, x/6 + 1/2))

Kernels run over flat views. The sigmoid's backward needs only its output (σ' = σ(1 − σ)); the
hard ones keep their input. At the kinks of the hard ones the derivative is taken from the
flat side (0), as torch does for the hard sigmoid; the hard swish is continuous there, and its
derivative at x = ±3 is taken as torch's: 0 below −3, 1 above 3, x/3 + 1/2 between, ends
included (−1/2 at −3, 3/2 at 3).
"""

import numpy as np
from numba import njit, prange

from ._args import float_array, where
from ._jit import JIT_PARALLEL


@njit(**JIT_PARALLEL)
def sigmoid_forward_flat(x, y):
    # x, y: (M,);  y = 1 / (1 + e^−x), with e^x / (1 + e^x) below 0 (no overflow of e^−x)
    for i in prange(x.shape[0]):
        v = x[i]
        if v >= 0:
            y[i] = 1.0 / (1.0 + np.exp(-v))
        else:
            e = np.exp(v)
            y[i] = e / (1.0 + e)


@njit(**JIT_PARALLEL)
def sigmoid_backward_flat(dy, y, dx):
    # dy, y, dx: (M,);  dx = dy · y · (1 − y)
    for i in prange(dy.shape[0]):
        dx[i] = dy[i] * y[i] * (1.0 - y[i])


@njit(**JIT_PARALLEL)
def hard_sigmoid_forward_flat(x, alpha, beta, y):
    # x, y: (M,);  y = max(0, min(1, alpha · x + beta))
    for i in prange(x.shape[0]):
        y[i] = max(0.0, min(1.0, alpha * x[i] + beta))


@njit(**JIT_PARALLEL)
def hard_sigmoid_backward_flat(dy, x, alpha, beta, dx):
    # dx = alpha · dy where 0 < alpha · x + beta < 1, else 0
    for i in prange(dy.shape[0]):
        v = alpha * x[i] + beta
        dx[i] = alpha * dy[i] if 0.0 < v < 1.0 else 0.0


@njit(**JIT_PARALLEL)
def hard_swish_forward_flat(x, y):
    # x, y: (M,);  y = x · max(0, min(1, x/6 + 1/2))
    for i in prange(x.shape[0]):
        v = x[i]
        y[i] = v * max(0.0, min(1.0, v / 6.0 + 0.5))


@njit(**JIT_PARALLEL)
def hard_swish_backward_flat(dy, x, dx):
    # dx = dy · (0 if x < −3, 1 if x > 3, x/3 + 1/2 otherwise)
    for i in prange(dy.shape[0]):
        v = x[i]
        if v < -3.0:
            dx[i] = 0.0
        elif v > 3.0:
            dx[i] = dy[i]
        else:
            dx[i] = dy[i] * (v / 3.0 + 0.5)


def check_hard_sigmoid(alpha, beta, at):
    """(alpha, beta) as floats, both finite."""
    try:
        a, b = float(alpha), float(beta)
    except (TypeError, ValueError):
        a = b = float("nan")
    if not (np.isfinite(a) and np.isfinite(b)):
        raise ValueError(f"{at}: alpha and beta must be finite, got {alpha!r}, {beta!r}")
    return a, b


def _pair(dy, x, at):
    x = float_array(x, "input", at)
    dy = float_array(dy, "output gradient", at, dtype=x.dtype)
    if dy.shape != x.shape:
        raise ValueError(f"{at}: output gradient shape {dy.shape} does not match the input "
                         f"{x.shape}")
    return dy, x


def sigmoid_forward(x, *, name="sigmoid"):
    """1 / (1 + e^−x), any shape."""
    x = float_array(x, "input", where(name, "Sigmoid"))
    y = np.empty_like(x)
    sigmoid_forward_flat(x.reshape(-1), y.reshape(-1))
    return y


def sigmoid_backward(dy, x, *, name="sigmoid"):
    """Gradient of ``sigmoid_forward`` w.r.t. x."""
    dy, x = _pair(dy, x, where(name, "Sigmoid"))
    y = sigmoid_forward(x)
    dx = np.empty_like(x)
    sigmoid_backward_flat(dy.reshape(-1), y.reshape(-1), dx.reshape(-1))
    return dx


def hard_sigmoid_forward(x, alpha=0.2, beta=0.5, *, name="hard_sigmoid"):
    """max(0, min(1, alpha · x + beta)), any shape."""
    at = where(name, "HardSigmoid")
    a, b = check_hard_sigmoid(alpha, beta, at)
    x = float_array(x, "input", at)
    y = np.empty_like(x)
    hard_sigmoid_forward_flat(x.reshape(-1), a, b, y.reshape(-1))
    return y


def hard_sigmoid_backward(dy, x, alpha=0.2, beta=0.5, *, name="hard_sigmoid"):
    """Gradient of ``hard_sigmoid_forward`` w.r.t. x (0 at the kinks)."""
    at = where(name, "HardSigmoid")
    a, b = check_hard_sigmoid(alpha, beta, at)
    dy, x = _pair(dy, x, at)
    dx = np.empty_like(x)
    hard_sigmoid_backward_flat(dy.reshape(-1), x.reshape(-1), a, b, dx.reshape(-1))
    return dx


def hard_swish_forward(x, *, name="hard_swish"):
    """x · max(0, min(1, x/6 + 1/2)), any shape."""
    x = float_array(x, "input", where(name, "HardSwish"))
    y = np.empty_like(x)
    hard_swish_forward_flat(x.reshape(-1), y.reshape(-1))
    return y


def hard_swish_backward(dy, x, *, name="hard_swish"):
    """Gradient of ``hard_swish_forward`` w.r.t. x."""
    dy, x = _pair(dy, x, where(name, "HardSwish"))
    dx = np.empty_like(x)
    hard_swish_backward_flat(dy.reshape(-1), x.reshape(-1), dx.reshape(-1))
    return dx
