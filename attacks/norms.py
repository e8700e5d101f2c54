"""The norm hooks the gradient attacks share (Foolbox 3's ``normalize`` / ``project`` split).

Every gradient attack is written once over a norm; these functions are the only places where
L∞ and L2 differ:

    normalize(g, norm)            the steepest-ascent direction of unit norm: sign(g) for L∞,
                                  g / ‖g‖₂ for L2 (zero where the gradient is zero)
    project(delta, eps, norm)     the closest point of the eps-ball: clip to [−eps, eps] for L∞,
                                  rescale to ‖delta‖₂ ≤ eps for L2
    random_start(rng, shape, eps, norm, dtype)
                                  a uniform point of the eps-ball (PGD's random start)
    perturbation_norms(x, x_adv)  per-example L0, L2 and L∞ sizes of x_adv − x

All norms are per example: over every axis but the first.
"""

import math

import numpy as np

NORMS = ("linf", "l2")

# Accepted spellings of each norm → its canonical name.
_ALIASES = {"linf": "linf", "inf": "linf", "l_inf": "linf", "l∞": "linf",
            "l2": "l2", "2": "l2"}

# A change smaller than this (in data units) does not count towards L0: attacks that work in a
# transformed space (C&W's tanh) reproduce unchanged pixels only up to rounding.
L0_TOL = 1e-6


def check_norm(norm, name):
    """The canonical name ("linf" or "l2") of ``norm`` ("linf", "inf", np.inf, "l2", 2)."""
    if isinstance(norm, bool):
        key = None
    elif isinstance(norm, (int, float, np.integer, np.floating)):
        key = "linf" if math.isinf(norm) and norm > 0 else ("l2" if norm == 2 else None)
    elif isinstance(norm, str):
        key = _ALIASES.get(norm.strip().lower())
    else:
        key = None
    if key is None:
        raise ValueError(f"{name}: norm must be one of {list(NORMS)} (or np.inf, 2), got {norm!r}")
    return key


def _per_example(a):
    """``a`` as (N, D) rows (a view when possible)."""
    return a.reshape(a.shape[0], -1)


def l2_norms(a):
    """‖a[n]‖₂ for every example, computed in float64 without overflow or underflow."""
    rows = _per_example(a).astype(np.float64)
    scale = np.abs(rows).max(axis=1, initial=0.0)
    safe = np.where(scale > 0, scale, 1.0)
    return scale * np.sqrt(((rows / safe[:, None]) ** 2).sum(axis=1))


def normalize(g, norm):
    """The unit-norm steepest-ascent direction for each example's gradient ``g[n]``.

    L∞: sign(g) (every coordinate ±1; exactly zero where g is zero). L2: g / ‖g‖₂; an example
    whose gradient is entirely zero gets a zero direction. Same shape and dtype as ``g``.
    """
    if norm == "linf":
        return np.sign(g)
    if norm == "l2":
        rows = _per_example(g)
        # Divide by the largest |g| first: tiny float32 gradients would underflow when squared.
        scale = np.abs(rows).max(axis=1, initial=0).astype(np.float64)
        safe = np.where(scale > 0, scale, 1.0)
        unit = rows / safe[:, None].astype(g.dtype)
        length = np.sqrt((unit.astype(np.float64) ** 2).sum(axis=1))
        length[length == 0] = 1.0
        return (unit / length[:, None].astype(g.dtype)).reshape(g.shape).astype(g.dtype, copy=False)
    raise ValueError(f"normalize: unknown norm {norm!r}")


def project(delta, eps, norm):
    """The point of the eps-ball around 0 closest to each ``delta[n]`` (a new array).

    L∞: clip every coordinate to [−eps, eps]. L2: scale by min(1, eps / ‖delta[n]‖₂). With
    float32 the L2 result may exceed eps by a rounding error (a few units of 1e-7 · eps).
    """
    if norm == "linf":
        return np.clip(delta, -eps, eps)
    if norm == "l2":
        length = l2_norms(delta)
        factor = np.minimum(1.0, eps / np.where(length > 0, length, 1.0))
        shape = (delta.shape[0],) + (1,) * (delta.ndim - 1)
        return delta * factor.reshape(shape).astype(delta.dtype)
    raise ValueError(f"project: unknown norm {norm!r}")


def random_start(rng, shape, eps, norm, dtype=np.float64):
    """A point drawn uniformly (by volume) from the eps-ball, for each of ``shape[0]`` examples.

    L∞: every coordinate uniform in [−eps, eps]. L2: a direction uniform on the sphere (a
    standard normal vector, normalised) times a radius eps · U^(1/d) with U uniform in [0, 1)
    and d the number of coordinates per example; that radius law makes the point uniform in the
    ball's volume, so in high dimension almost every start lies close to the sphere
    (the median radius is eps · 2^(−1/d)). The draws are, in order: the normals, then the radii.
    """
    shape = tuple(int(s) for s in shape)
    if norm == "linf":
        return rng.uniform(-eps, eps, size=shape).astype(dtype)
    if norm == "l2":
        d = int(np.prod(shape[1:]))
        direction = normalize(rng.standard_normal(size=shape), "l2")
        radius = eps * rng.uniform(0.0, 1.0, size=shape[0]) ** (1.0 / max(d, 1))
        return (direction * radius.reshape((-1,) + (1,) * (len(shape) - 1))).astype(dtype)
    raise ValueError(f"random_start: unknown norm {norm!r}")


def perturbation_norms(x, x_adv):
    """Per-example sizes of ``x_adv − x`` → {"l0": (N,), "l2": (N,), "linf": (N,)} float64.

    L0 counts the input values (pixels × channels) that changed by more than ``L0_TOL``.
    """
    delta = _per_example(np.asarray(x_adv, dtype=np.float64) - np.asarray(x, dtype=np.float64))
    return {"l0": (np.abs(delta) > L0_TOL).sum(axis=1).astype(np.float64),
            "l2": np.sqrt((delta ** 2).sum(axis=1)),
            "linf": np.abs(delta).max(axis=1, initial=0.0)}
