"""engine/merge.py: concat, elementwise sum (with coefficients) and flatten, forward and
backward."""

import numpy as np
import pytest
from helpers import F32, F64, check_op

from robustcnn.engine import (concat_backward, concat_forward, eltwise_sum_backward,
                              eltwise_sum_forward, flatten_backward, flatten_forward)

# ---------------------------------------------------------------------------------------------
# Concat


def concat_ref(xs, axis):
    """Each input copied into its slot of a zero array, one index at a time along ``axis``."""
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    y = np.zeros(shape)
    at = 0
    for x in xs:
        for i in range(x.shape[axis]):
            dst = [slice(None)] * y.ndim
            src = [slice(None)] * y.ndim
            dst[axis], src[axis] = at + i, i
            y[tuple(dst)] = x[tuple(src)]
        at += x.shape[axis]
    return y


def concat_ref_backward(dy, xs, axis):
    bounds = np.cumsum([0] + [x.shape[axis] for x in xs])
    return tuple(np.take(dy, np.arange(lo, hi), axis=axis) for lo, hi in zip(bounds, bounds[1:]))


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("shapes,axis", [
    ([(2, 3, 4, 5), (2, 1, 4, 5), (2, 6, 4, 5)], 1),  # channels (Caffe's default)
    ([(2, 3, 4, 5), (2, 3, 2, 5)], 2),
    ([(2, 3, 4, 5), (2, 3, 4, 1)], 3),
    ([(3, 4), (3, 7)], 1),
    ([(2, 3, 4, 5)], 1),  # a single input: a copy
    ([(2, 2, 3, 3), (2, 2, 3, 3)], -1),
])
def test_concat(shapes, axis, dtype, rng):
    xs = [rng.standard_normal(s) for s in shapes]
    names = [f"x{i}" for i in range(len(xs))]
    sizes = [s[axis] for s in shapes]
    # op(*inputs) wrappers around the list-taking functions:
    check_op(lambda *xs: concat_forward(list(xs), axis),
             lambda *xs: concat_ref(xs, axis), xs,
             backward=lambda dy, *xs: concat_backward(dy, sizes, axis),
             ref_backward=lambda dy, *xs: concat_ref_backward(dy, xs, axis),
             wrt=tuple(range(len(xs))), dtype=dtype, what=f"concat({', '.join(names)})")


def test_concat_bad_input(rng):
    a, b = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 5, 4))
    with pytest.raises(ValueError, match=r"cat1 \(Concat\): input 1 shape \(2, 3, 5, 4\) does not "
                                         r"match input 0 shape \(2, 3, 4, 4\) outside axis 1"):
        concat_forward([a, b], name="cat1")
    with pytest.raises(ValueError, match="does not match input 0"):
        concat_forward([a, a[0]])
    with pytest.raises(ValueError, match="needs at least one input"):
        concat_forward([])
    with pytest.raises(TypeError, match="input 1 is float32 but the input is float64"):
        concat_forward([a, a.astype(np.float32)])
    with pytest.raises(ValueError, match="input 0 has 1 non-finite"):
        a[0, 0, 0, 0] = np.nan
        concat_forward([a, a])


# ---------------------------------------------------------------------------------------------
# Elementwise sum


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("n,coeffs", [(2, None), (2, [0.5, -2.0]), (3, [1.0, 0.0, 3.25]),
                                      (1, [-1.5])])
def test_eltwise_sum(n, coeffs, dtype, rng):
    xs = [rng.standard_normal((2, 3, 4, 5)) for _ in range(n)]
    c = [1.0] * n if coeffs is None else coeffs

    def ref(*xs):
        y = np.zeros_like(xs[0])
        for ci, x in zip(c, xs):
            y = y + ci * x
        return y

    check_op(lambda *xs: eltwise_sum_forward(list(xs), coeffs), ref, xs,
             backward=lambda dy, *xs: eltwise_sum_backward(dy, c),
             ref_backward=lambda dy, *xs: tuple(ci * dy for ci in c),
             wrt=tuple(range(n)), dtype=dtype, what=f"eltwise_sum(coeffs={coeffs})")


def test_eltwise_sum_does_not_alias_its_input(rng):
    x = rng.standard_normal((2, 3))
    y = eltwise_sum_forward([x])
    y += 1.0
    assert not np.shares_memory(x, y)


def test_eltwise_bad_input(rng):
    a = rng.standard_normal((2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"sum1 \(Eltwise\): input 1 shape \(2, 3, 4, 3\) does not "
                                         r"match input 0 shape \(2, 3, 4, 4\)"):
        eltwise_sum_forward([a, a[..., :3]], name="sum1")
    with pytest.raises(ValueError, match="3 coefficients for 2 inputs"):
        eltwise_sum_forward([a, a], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="needs at least one input"):
        eltwise_sum_forward([])
    with pytest.raises(TypeError, match="input 1 must be float32 or float64"):
        eltwise_sum_forward([a, a.astype(int)])


# ---------------------------------------------------------------------------------------------
# Flatten


def flatten_ref(x):
    N = x.shape[0]
    y = np.empty((N, int(np.prod(x.shape[1:]))))
    for idx in np.ndindex(*x.shape):
        y[idx[0], np.ravel_multi_index(idx[1:], x.shape[1:])] = x[idx]
    return y


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 7), (1, 1, 1, 1), (2, 3, 1)], ids=str)
def test_flatten(shape, dtype, rng):
    check_op(flatten_forward, flatten_ref, [rng.standard_normal(shape)],
             backward=lambda dy, x: flatten_backward(dy, x.shape),
             ref_backward=lambda dy, x: dy.reshape(x.shape), dtype=dtype, what="flatten")


def test_flatten_empty_batch():
    # An empty batch keeps its feature size (reshape cannot infer a -1 axis next to N = 0).
    y = flatten_forward(np.zeros((0, 2, 3, 4)))
    assert y.shape == (0, 24)
    assert flatten_backward(y, (0, 2, 3, 4)).shape == (0, 2, 3, 4)


def test_flatten_is_a_view_of_contiguous_input(rng):
    x = rng.standard_normal((2, 3, 4))
    assert np.shares_memory(flatten_forward(x), x)
