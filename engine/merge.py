"""Blob plumbing for branching nets, forward and backward: concat, elementwise sum (with
coefficients), product and max (Caffe's Eltwise), flatten, reshape, axis permutation and zero
padding.

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


def _same_shapes(xs, at):
    if not xs:
        raise ValueError(f"{at}: needs at least one input")
    xs = [float_array(x, f"input {i}", at, dtype=xs[0].dtype) for i, x in enumerate(xs)]
    for i, x in enumerate(xs[1:], 1):
        if x.shape != xs[0].shape:
            raise ValueError(f"{at}: input {i} shape {x.shape} does not match input 0 shape {xs[0].shape}")
    return xs


def eltwise_sum_forward(xs, coeffs=None, *, name="eltwise"):
    """y = Σ_i coeffs[i] · xs[i] (all coefficients 1 by default), as Caffe's Eltwise SUM."""
    at = where(name, "Eltwise")
    xs = _same_shapes(xs, at)
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


def eltwise_prod_forward(xs, *, name="eltwise"):
    """y = Π_i xs[i], elementwise (Caffe's Eltwise PROD)."""
    xs = _same_shapes(xs, where(name, "Eltwise"))
    y = xs[0].copy()
    for x in xs[1:]:
        y *= x
    return y


def eltwise_prod_backward(dy, xs):
    """dx_i = dy · Π_{j≠i} xs[j] (the product of the others, not y / x_i: exact at zeros,
    as Caffe's ``stable_prod_grad``)."""
    grads = []
    for i in range(len(xs)):
        g = dy.copy()
        for j, x in enumerate(xs):
            if j != i:
                g *= x
        grads.append(g)
    return grads


def eltwise_max_forward(xs, *, name="eltwise"):
    """(y, argmax): y = max_i xs[i] elementwise, argmax the index of the first input holding
    the maximum (Caffe's Eltwise MAX and its mask), int64."""
    return eltwise_max_dense(_same_shapes(xs, where(name, "Eltwise")))


def eltwise_max_dense(xs):
    """``eltwise_max_forward`` on checked arguments."""
    y = xs[0].copy()
    argmax = np.zeros(y.shape, dtype=np.int64)
    for i, x in enumerate(xs[1:], 1):
        larger = x > y  # strictly: ties stay with the earlier input
        y[larger] = x[larger]
        argmax[larger] = i
    return y, argmax


def eltwise_max_backward(dy, argmax, n_inputs):
    """dx_i = dy where input i held the maximum, 0 elsewhere."""
    return [np.where(argmax == i, dy, dy.dtype.type(0)) for i in range(n_inputs)]


def reshape_target(in_shape, shape, at):
    """The per-example output shape of reshaping ``in_shape`` to ``shape``, where one entry of
    ``shape`` may be -1 (inferred from the element count)."""
    shape = [int(s) for s in shape]
    size = int(np.prod(in_shape))
    if shape.count(-1) > 1 or any(s < -1 or s == 0 for s in shape):
        raise ValueError(f"{at}: target shape {tuple(shape)} must have positive sizes and at "
                         f"most one -1")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        if size % known:
            raise ValueError(f"{at}: cannot reshape {tuple(in_shape)} ({size} values) to "
                             f"{tuple(shape)}")
        shape[shape.index(-1)] = size // known
    elif known != size:
        raise ValueError(f"{at}: cannot reshape {tuple(in_shape)} ({size} values) to "
                         f"{tuple(shape)} ({known} values)")
    return tuple(shape)


def reshape_forward(x, shape, *, name="reshape"):
    """(N, …) → (N, *shape), ``shape`` per example with at most one -1; a view when possible."""
    at = where(name, "Reshape")
    x = float_array(x, "input", at)
    return x.reshape((x.shape[0],) + reshape_target(x.shape[1:], shape, at))


def reshape_backward(dy, in_shape):
    """The gradient in the input's shape (N, …)."""
    return dy.reshape(in_shape)


def check_pad2d(padding, at):
    """((top, bottom), (left, right)) from an int, an (h, w) pair or the four sizes, each >= 0."""
    try:
        if isinstance(padding, (int, np.integer)):
            pads = ((padding, padding), (padding, padding))
        else:
            h, w = padding
            pads = tuple((v, v) if isinstance(v, (int, np.integer)) else tuple(v) for v in (h, w))
        pads = tuple(tuple(int(v) for v in p) for p in pads)
        ok = len(pads) == 2 and all(len(p) == 2 and min(p) >= 0 for p in pads)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{at}: padding must be an int, (h, w) or ((top, bottom), (left, "
                         f"right)) of sizes >= 0, got {padding!r}")
    return pads


def pad2d_forward(x, padding, *, name="pad2d"):
    """Zero padding of ``x`` (N, C, H, W) → (N, C, H + top + bottom, W + left + right);
    ``padding`` as ``check_pad2d`` takes it (Keras' ZeroPadding2D, 'same' padding's uneven
    sides)."""
    at = where(name, "Pad2d")
    x = float_array(x, "input", at, ndim=4)
    (t, b), (l, r) = check_pad2d(padding, at)
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))


def pad2d_backward(dy, padding):
    """The gradient of the unpadded region: dy[:, :, top:H + top, left:W + left]."""
    (t, b), (l, r) = padding
    return np.ascontiguousarray(dy[:, :, t:dy.shape[2] - b, l:dy.shape[3] - r])


def permute_forward(x, axes, *, name="permute"):
    """The per-example axes of ``x`` (N, …) in the order ``axes`` (a permutation of 0 … k−1,
    k = x.ndim − 1), e.g. (1, 2, 0) turns (N, C, H, W) into (N, H, W, C); a contiguous copy."""
    at = where(name, "Permute")
    x = float_array(x, "input", at)
    axes = check_permutation(axes, x.ndim - 1, at)
    return np.ascontiguousarray(x.transpose((0,) + tuple(a + 1 for a in axes)))


def check_permutation(axes, rank, at):
    axes = tuple(int(a) for a in axes)
    if sorted(axes) != list(range(rank)):
        raise ValueError(f"{at}: axes {axes} must be a permutation of 0 … {rank - 1}")
    return axes


def permute_backward(dy, axes):
    """The gradient in the input's axis order (the inverse permutation)."""
    inverse = np.argsort(axes)
    return np.ascontiguousarray(dy.transpose((0,) + tuple(int(a) + 1 for a in inverse)))
