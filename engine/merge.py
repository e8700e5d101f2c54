"""Blob plumbing for branching nets, forward and backward: concat, elementwise sum, flatten.

These move or add whole arrays; NumPy already does that at memory speed, so no kernels here.
"""

import numpy as np

from ._args import float_array, where


def concat_forward(xs, axis=1, *, name="concat"):
    """Concatenate arrays along ``axis`` (channels by default, as Caffe's Concat)."""
    at = where(name, "Concat")
    if not xs:
        raise ValueError(f"{at}: needs at least one input")
    xs = [float_array(x, f"input {i}", at, dtype=xs[0].dtype) for i, x in enumerate(xs)]
    for i, x in enumerate(xs[1:], 1):
        if x.ndim != xs[0].ndim or any(a != b for d, (a, b) in enumerate(zip(x.shape, xs[0].shape))
                                       if d != axis % x.ndim):
            raise ValueError(f"{at}: input {i} shape {x.shape} does not match input 0 shape "
                             f"{xs[0].shape} outside axis {axis}")
    return np.concatenate(xs, axis=axis)


def concat_backward(dy, sizes, axis=1):
    """Split the output gradient back into the inputs' gradients; ``sizes`` along ``axis``."""
    bounds = np.cumsum(sizes)[:-1]
    return [np.ascontiguousarray(part) for part in np.split(dy, bounds, axis=axis)]


def eltwise_sum_forward(xs, coeffs=None, *, name="eltwise"):
    """y = Σ_i coeffs[i] · xs[i] (all coefficients 1 by default), as Caffe's Eltwise SUM."""
    at = where(name, "Eltwise")
    if not xs:
        raise ValueError(f"{at}: needs at least one input")
    xs = [float_array(x, f"input {i}", at, dtype=xs[0].dtype) for i, x in enumerate(xs)]
    for i, x in enumerate(xs[1:], 1):
        if x.shape != xs[0].shape:
            raise ValueError(f"{at}: input {i} shape {x.shape} does not match input 0 shape {xs[0].shape}")
    coeffs = [1.0] * len(xs) if coeffs is None else list(coeffs)
    if len(coeffs) != len(xs):
        raise ValueError(f"{at}: {len(coeffs)} coefficients for {len(xs)} inputs")
    y = xs[0] * xs[0].dtype.type(coeffs[0])
    for c, x in zip(coeffs[1:], xs[1:]):
        y += x.dtype.type(c) * x
    return y


def eltwise_sum_backward(dy, coeffs):
    """dx_i = coeffs[i] · dy."""
    return [dy * dy.dtype.type(c) for c in coeffs]


def flatten_forward(x):
    """(N, …) → (N, prod(…)), a view when ``x`` is contiguous."""
    # The size is spelled out: reshape cannot infer a -1 axis next to N = 0 (an empty batch).
    return x.reshape(x.shape[0], int(np.prod(x.shape[1:])))


def flatten_backward(dy, in_shape):
    """Reshape the gradient back to the input's shape (N, …)."""
    return dy.reshape(in_shape)
