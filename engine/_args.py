"""Argument checks shared by the functional API and the layers.

Kernels assume what these functions establish: float32 or float64 C-contiguous arrays of the
right rank, finite values, positive sizes. Every message starts with where the problem is, e.g.
``conv2 (Convolution): weight shape (50, 20, 5, 5) does not match input channels 16``.
"""

import numpy as np
from numba import njit, prange

from ._jit import JIT_PARALLEL

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@njit(**JIT_PARALLEL)
def count_nonfinite(flat):
    # flat: (M,) → how many entries are NaN or ±inf (v − v is 0 exactly for finite v);
    # one pass, no temporary: np.isfinite(a).all() allocates a mask as large as ``a``.
    bad = 0
    for i in prange(flat.shape[0]):
        v = flat[i]
        if v - v != 0:
            bad += 1
    return bad


# Entries below which NumPy's mask costs less than a thread launch (and than compiling the
# kernel at the first call of a fresh process).
_SMALL = 1 << 16


def nonfinite(a):
    """Number of NaN/inf entries of a float array."""
    if a.size < _SMALL:
        return int(a.size - np.count_nonzero(np.isfinite(a)))
    return int(count_nonfinite(np.ascontiguousarray(a).reshape(-1)))


def check_output(y, at, inputs):
    """Raise if ``y`` is not finite: name the non-finite operand among ``inputs``
    ({what: array}, checked only now, after the fact) or report an overflow."""
    if not nonfinite(y):
        return y
    for what, a in inputs.items():
        if a is not None and nonfinite(a):
            raise ValueError(f"{at}: {what} has {nonfinite(a)} non-finite value(s) (NaN or inf)")
    raise FloatingPointError(f"{at}: the output overflowed to non-finite values from finite "
                             f"operands (check the scale of the weights and the input)")


def where(name, kind):
    """The prefix of an error message: ``conv2 (Convolution)``, or just ``conv2d_forward``."""
    return f"{name} ({kind})" if kind and name != kind else str(name)


def pair(value, what, at, *, minimum=0):
    """An int or an (h, w) pair of ints → (h, w), each at least ``minimum``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        h = w = int(value)
    else:
        try:
            h, w = value
        except (TypeError, ValueError):
            raise ValueError(f"{at}: {what} must be an int or an (h, w) pair, got {value!r}") from None
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (h, w)):
            raise ValueError(f"{at}: {what} must be integers, got {value!r}")
        h, w = int(h), int(w)
    if h < minimum or w < minimum:
        raise ValueError(f"{at}: {what} must be >= {minimum}, got {value!r}")
    return h, w


def float_array(a, what, at, *, ndim=None, dtype=None, finite=True):
    """Check that ``a`` is a float32/float64 array (of ``dtype`` if given) with ``ndim`` axes.

    Returns it C-contiguous (copying only if needed). Raises TypeError for a wrong type or
    dtype, ValueError for a wrong rank or (with ``finite``) non-finite values. Weights are
    passed with ``finite=False`` and caught through the output instead (``check_output``):
    checking a large weight on every call would cost as much as using it.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{at}: {what} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{at}: {what} must be float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{at}: {what} is {a.dtype} but the input is {dtype}; use one dtype")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{at}: {what} must have {ndim} axes, got shape {a.shape}")
    a = np.ascontiguousarray(a)
    if finite:
        bad = nonfinite(a)
        if bad:
            raise ValueError(f"{at}: {what} has {bad} non-finite value(s) (NaN or inf)")
    return a


def shape_is(a, expected, what, at):
    """Raise ValueError unless ``a.shape == expected``."""
    if tuple(a.shape) != tuple(expected):
        raise ValueError(f"{at}: {what} shape {tuple(a.shape)} does not match expected {tuple(expected)}")


def labels_array(labels, n, classes, at):
    """Integer class labels of shape (n,), each in [0, classes) → int64 array."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{at}: labels must be integers, got {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"{at}: labels shape {labels.shape} does not match the batch ({n},)")
    if n and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(
            f"{at}: labels must lie in [0, {classes}), found range [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64, copy=False)
