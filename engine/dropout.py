"""Dropout (train mode only; identity in eval mode), forward and backward.

Inverted dropout, as Caffe: keep each unit with probability 1 − p and scale the kept ones by
1 / (1 − p), so that eval mode needs no rescaling.  y = x · mask,  dx = dy · mask.
"""

import numpy as np

from ._args import float_array, where


def dropout_mask(shape, p, rng, dtype=np.float32):
    """A mask of 0 and 1/(1 − p) entries drawn from ``rng`` (a numpy Generator)."""
    dtype = np.dtype(dtype)
    if p == 0:
        return np.ones(shape, dtype=dtype)
    keep = rng.random(shape, dtype=np.float32) >= p
    return keep.astype(dtype) * dtype.type(1.0 / (1.0 - p))


def check_ratio(p, at):
    if not (0.0 <= float(p) < 1.0):
        raise ValueError(f"{at}: dropout ratio must be in [0, 1), got {p!r}")
    return float(p)


def dropout_forward(x, p, rng, *, name="dropout"):
    """Train-mode dropout of ``x`` → (y, mask); ``rng`` is a ``numpy.random.Generator``."""
    at = where(name, "Dropout")
    x = float_array(x, "input", at)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{at}: rng must be a numpy.random.Generator, got {type(rng).__name__}")
    mask = dropout_mask(x.shape, check_ratio(p, at), rng, x.dtype)
    return x * mask, mask


def dropout_backward(dy, mask, *, name="dropout"):
    """dx = dy · mask."""
    at = where(name, "Dropout")
    dy = float_array(dy, "output gradient", at)
    if dy.shape != mask.shape:
        raise ValueError(f"{at}: output gradient shape {dy.shape} does not match the mask {mask.shape}")
    return dy * mask
