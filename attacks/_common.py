"""Argument checks and helpers shared by the attacks."""

import math

import numpy as np


def check_eps(eps, name):
    eps = float(eps)
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"{name}: eps must be finite and >= 0, got {eps!r}")
    return eps


def check_clip(clip, x, name):
    """``clip`` = (lo, hi) or None; ``x`` must already lie inside it."""
    if clip is None:
        return None
    try:
        lo, hi = (float(c) for c in clip)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: clip must be a (low, high) pair or None, got {clip!r}") from None
    if not lo < hi:
        raise ValueError(f"{name}: clip low {lo} must be below high {hi}")
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"{name}: the input spans [{x.min():.4g}, {x.max():.4g}], outside clip "
                         f"({lo}, {hi}); eps is in the units of the data range, so scale the "
                         f"input first or pass the right clip")
    return lo, hi


def check_inputs(net, x, y, name):
    """x as the net's dtype; y as int64 labels (default: the net's predictions)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: x must be a numpy array, got {type(x).__name__}")
    x = np.ascontiguousarray(x, dtype=net.dtype)
    if y is None:
        # Labels default to the model's own predictions, not the truth: using true labels
        # "leaks" them into the attack (Kurakin et al. 2017), which users must choose knowingly.
        y = net.predict(x)
    y = np.asarray(y)
    if y.shape != (x.shape[0],) or y.dtype.kind not in "iu":
        raise ValueError(f"{name}: y must be {x.shape[0]} integer labels, got shape {y.shape} "
                         f"dtype {y.dtype}")
    return x, y.astype(np.int64)
