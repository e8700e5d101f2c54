"""The checkers in tests/helpers.py must fail on broken ops: a test that cannot fail is a defect.

Each test hands ``check_op`` or ``check_gradients`` a deliberately broken copy of a correct op
(a flipped sign, a scale off by 1e-8, a wrong dtype, a mutated input …) and expects it to raise.
"""

import numpy as np
import pytest
from helpers import F32, F64, assert_close, check_gradients, check_op

from robustcnn.engine import conv2d_backward, conv2d_forward, relu_backward, relu_forward


def conv_ref(x, w):
    """A tiny loop reference: 3×3 'valid' cross-correlation, one channel in and out."""
    H, W = x.shape[2] - 2, x.shape[3] - 2
    y = np.zeros((x.shape[0], 1, H, W))
    for i in range(3):
        for j in range(3):
            y[:, 0] += w[0, 0, i, j] * x[:, 0, i:i + H, j:j + W]
    return y


def conv_ref_backward(dy, x, w):
    H, W = dy.shape[2:]
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for i in range(3):
        for j in range(3):
            dx[:, 0, i:i + H, j:j + W] += w[0, 0, i, j] * dy[:, 0]
            dw[0, 0, i, j] = (dy[:, 0] * x[:, 0, i:i + H, j:j + W]).sum()
    return dx, dw


@pytest.fixture
def conv_inputs(rng):
    return [rng.standard_normal((2, 1, 6, 5)), rng.standard_normal((1, 1, 3, 3))]


def good_backward(dy, x, w):
    return conv2d_backward(dy, x, w)[:2]


def test_correct_op_passes(conv_inputs):
    for dtype in (F64, F32):
        check_op(conv2d_forward, conv_ref, conv_inputs, backward=good_backward,
                 ref_backward=conv_ref_backward, wrt=(0, 1), dtype=dtype)


@pytest.mark.parametrize("dtype,error", [(F64, 1e-8), (F32, 1e-4)])
def test_forward_slightly_off_fails(conv_inputs, dtype, error):
    def broken(x, w):
        return conv2d_forward(x, w) * dtype.type(1 + error)

    with pytest.raises(AssertionError, match="forward"):
        check_op(broken, conv_ref, conv_inputs, dtype=dtype)


def test_flipped_sign_in_weight_gradient_fails_against_reference(conv_inputs):
    def broken(dy, x, w):
        dx, dw = good_backward(dy, x, w)
        return dx, -dw

    with pytest.raises(AssertionError, match="gradient 1"):
        check_op(conv2d_forward, conv_ref, conv_inputs, backward=broken,
                 ref_backward=conv_ref_backward, wrt=(0, 1), dtype=F32)


@pytest.mark.parametrize("error", [-2.0, 1e-4])
def test_wrong_gradient_fails_by_finite_differences_alone(conv_inputs, error):
    # No reference backward: the finite differences of the op's own forward must catch it.
    def broken(dy, x, w):
        dx, dw = good_backward(dy, x, w)
        return dx * (1 + error), dw

    with pytest.raises(AssertionError, match="finite differences give"):
        check_op(conv2d_forward, conv_ref, conv_inputs, backward=broken, wrt=(0, 1))


def test_one_wrong_gradient_entry_is_found_in_small_arrays(rng):
    # Arrays no larger than ``samples`` are checked at every coordinate.
    x = rng.standard_normal((2, 3)) + 3.0
    g = np.ones_like(x)
    g[1, 2] = 1.001
    with pytest.raises(AssertionError, match=r"at \(np.int64\(1\), np.int64\(2\)\)|at \(1, 2\)"):
        check_gradients(lambda x: x, [x], np.ones_like(x), (g,), samples=6)


@pytest.mark.parametrize("breakage,match", [
    (lambda y: y.astype(np.float64), "output dtype float64, expected float32"),
    (lambda y: y[:, :, :-1], "output shape"),
    (lambda y: y.tolist(), "not an ndarray"),
    (lambda y: np.where(y > 1, np.nan, y).astype(y.dtype), "NaN at"),
])
def test_output_type_shape_and_nan_are_checked(conv_inputs, breakage, match):
    with pytest.raises(AssertionError, match=match):
        check_op(lambda x, w: breakage(conv2d_forward(x, w)), conv_ref, conv_inputs, dtype=F32)


@pytest.mark.parametrize("breakage,match", [
    (lambda g: g.astype(np.float64), "gradient 0 dtype float64, expected float32"),
    (lambda g: g[:1], "gradient 0 shape"),
])
def test_gradient_type_and_shape_are_checked(conv_inputs, breakage, match):
    def broken(dy, x, w):
        dx, dw = good_backward(dy, x, w)
        return breakage(dx), dw

    with pytest.raises(AssertionError, match=match):
        check_op(conv2d_forward, conv_ref, conv_inputs, backward=broken, wrt=(0, 1), dtype=F32)


def test_an_op_that_writes_to_its_input_fails(rng):
    def broken(x):
        y = relu_forward(x)
        x[0] = 0.0
        return y

    with pytest.raises(AssertionError, match="modified its input 0"):
        check_op(broken, lambda x: np.maximum(x, 0), [rng.standard_normal(5) + 10])


def test_relu_at_a_kink_is_caught_by_finite_differences():
    # Why the activation tests keep inputs away from kinks: straddling 0 breaks the check.
    x = np.array([1e-8, 1.0, -2.0])
    with pytest.raises(AssertionError, match="finite differences"):
        check_op(relu_forward, lambda x: np.maximum(x, 0), [x],
                 backward=lambda dy, x: relu_backward(dy, x))


def test_assert_close_semantics():
    assert_close(np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-11]), 1e-11, "ok")
    with pytest.raises(AssertionError, match=r"max \|error\|"):
        assert_close(np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-9]), 1e-11, "too far")
    with pytest.raises(AssertionError, match="NaN at"):
        assert_close(np.array([np.nan]), np.array([1.0]), 1.0, "nan")
    with pytest.raises(AssertionError, match="shape"):
        assert_close(np.zeros(2), np.zeros(3), 1.0, "shape")
    # All-zero expectations need exact zeros unless an atol is given.
    with pytest.raises(AssertionError):
        assert_close(np.array([1e-300]), np.array([0.0]), 1e-3, "zero scale")
    assert_close(np.array([1e-300]), np.array([0.0]), 1e-3, "zero scale", atol=1e-299)
