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


# ---------------------------------------------------------------------------------------------
# Elementwise product and max, reshape


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_eltwise_prod(n, dtype, rng):
    from robustcnn.engine import eltwise_prod_backward, eltwise_prod_forward

    xs = [rng.standard_normal((2, 3, 4, 4)) for _ in range(n)]
    xs[0][0, 0, 0, :2] = 0.0  # the gradient at zeros is the product of the others

    def ref_backward(dy, *xs):
        return tuple(dy * np.prod([x for j, x in enumerate(xs) if j != i], axis=0)
                     if n > 1 else dy for i in range(n))

    check_op(lambda *xs: eltwise_prod_forward(list(xs)), lambda *xs: np.prod(xs, axis=0), xs,
             backward=lambda dy, *xs: eltwise_prod_backward(dy, list(xs)),
             ref_backward=ref_backward, wrt=tuple(range(n)), dtype=dtype, what=f"prod of {n}")


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_eltwise_max(n, dtype, rng):
    from helpers import distinct_values

    from robustcnn.engine import eltwise_max_backward, eltwise_max_forward

    # Distinct values across the inputs (no ties: finite differences are exact there).
    values = distinct_values(rng, (n, 2, 3, 4, 4))
    xs = list(values)

    def ref_backward(dy, *xs):
        winner = np.argmax(np.stack(xs), axis=0)
        return tuple(np.where(winner == i, dy, 0.0) for i in range(n))

    def backward(dy, *xs):
        _, argmax = eltwise_max_forward(list(xs))
        return eltwise_max_backward(dy, argmax, n)

    check_op(lambda *xs: eltwise_max_forward(list(xs))[0], lambda *xs: np.max(xs, axis=0), xs,
             backward=backward, ref_backward=ref_backward, wrt=tuple(range(n)), dtype=dtype,
             what=f"max of {n}")


def test_eltwise_max_ties_go_to_the_first_input():
    from robustcnn.engine import eltwise_max_backward, eltwise_max_forward

    a = np.array([[1.0, 2.0, 3.0]])
    y, argmax = eltwise_max_forward([a, a.copy(), np.array([[1.0, 5.0, 0.0]])])
    np.testing.assert_array_equal(argmax, [[0, 2, 0]])
    grads = eltwise_max_backward(np.ones_like(a), argmax, 3)
    np.testing.assert_array_equal(np.stack(grads)[:, 0], [[1, 0, 1], [0, 0, 0], [0, 1, 0]])


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("in_shape,shape,out", [((3, 4, 5), (-1,), (60,)),
                                                 ((3, 4, 5), (12, 5), (12, 5)),
                                                 ((6,), (2, -1, 1), (2, 3, 1))])
def test_reshape(in_shape, shape, out, dtype, rng):
    from robustcnn.engine import reshape_backward, reshape_forward

    x = rng.standard_normal((2,) + in_shape)
    y, _, _ = check_op(lambda x: reshape_forward(x, shape), lambda x: np.reshape(x, (2,) + out),
                       [x], backward=lambda dy, x: reshape_backward(dy, x.shape),
                       ref_backward=lambda dy, x: dy.reshape(x.shape), dtype=dtype,
                       what=f"reshape {in_shape} → {shape}")
    assert y.shape == (2,) + out


def test_reshape_and_prod_bad_input(rng):
    from robustcnn.engine import eltwise_prod_forward, reshape_forward

    x = rng.standard_normal((2, 3, 4))
    with pytest.raises(ValueError, match=r"r1 \(Reshape\): cannot reshape \(3, 4\) \(12 values\) "
                                         r"to \(5, -1\)"):
        reshape_forward(x, (5, -1), name="r1")
    with pytest.raises(ValueError, match="at most one -1"):
        reshape_forward(x, (-1, -1))
    with pytest.raises(ValueError, match=r"\(12 values\) to \(4, 4\) \(16 values\)"):
        reshape_forward(x, (4, 4))
    with pytest.raises(ValueError, match=r"e1 \(Eltwise\): input 1 shape"):
        eltwise_prod_forward([x, x[:, :2]], name="e1")


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("padding", [1, (0, 2), ((0, 1), (2, 0)), ((3, 1), (0, 0))])
def test_pad2d(padding, dtype, rng):
    from robustcnn.engine import pad2d_backward, pad2d_forward
    from robustcnn.engine.merge import check_pad2d

    pads = check_pad2d(padding, "test")
    x = rng.standard_normal((2, 3, 4, 5))

    def ref(x):  # zeros, then the input copied into its window, one cell at a time
        (t, b), (l, r) = pads
        y = np.zeros(x.shape[:2] + (x.shape[2] + t + b, x.shape[3] + l + r))
        for i in range(x.shape[2]):
            for j in range(x.shape[3]):
                y[:, :, t + i, l + j] = x[:, :, i, j]
        return y

    check_op(lambda x: pad2d_forward(x, padding), ref, [x],
             backward=lambda dy, x: pad2d_backward(dy, pads),
             ref_backward=lambda dy, x: dy[:, :, pads[0][0]:pads[0][0] + 4,
                                           pads[1][0]:pads[1][0] + 5],
             dtype=dtype, what=f"pad2d {padding}")


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("axes", [(1, 2, 0), (2, 0, 1), (0, 2, 1), (0, 1, 2)])
def test_permute(axes, dtype, rng):
    from robustcnn.engine import permute_backward, permute_forward

    x = rng.standard_normal((2, 3, 4, 5))

    def ref(x):
        y = np.empty((2,) + tuple(x.shape[1:][a] for a in axes))
        for idx in np.ndindex(*x.shape[1:]):
            y[(slice(None),) + tuple(idx[a] for a in axes)] = x[(slice(None),) + idx]
        return y

    def ref_backward(dy, x):
        dx = np.empty_like(x)
        for idx in np.ndindex(*x.shape[1:]):
            dx[(slice(None),) + idx] = dy[(slice(None),) + tuple(idx[a] for a in axes)]
        return dx

    y, _, _ = check_op(lambda x: permute_forward(x, axes), ref, [x],
                       backward=lambda dy, x: permute_backward(dy, axes),
                       ref_backward=ref_backward, dtype=dtype, what=f"permute {axes}")
    assert y.flags.c_contiguous


def test_pad_and_permute_bad_input(rng):
    from robustcnn.engine import pad2d_forward, permute_forward

    x = rng.standard_normal((2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"z \(Pad2d\): padding must be"):
        pad2d_forward(x, ((1, -1), (0, 0)), name="z")
    with pytest.raises(ValueError, match=r"p \(Permute\): axes \(0, 0, 1\) must be a permutation"):
        permute_forward(x, (0, 0, 1), name="p")
