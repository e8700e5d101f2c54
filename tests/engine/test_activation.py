"""engine/activation.py: ReLU (with Caffe's negative_slope) and ReLU6, forward and backward."""

import numpy as np
import pytest
from helpers import F32, F64, assert_close, check_op, uniform_away_from

from robustcnn.engine import relu6_backward, relu6_forward, relu_backward, relu_forward

# References (float64, elementwise with np.where; at a kink the derivative is taken as in Caffe:
# ReLU's x = 0 has slope negative_slope, ReLU6's 0 and 6 pass nothing).


def relu_ref(x, slope):
    return np.where(x > 0, x, slope * x)


def relu_ref_backward(dy, x, slope):
    return np.where(x > 0, dy, slope * dy)


def relu6_ref(x):
    return np.where(x < 0, 0.0, np.where(x > 6, 6.0, x))


def relu6_ref_backward(dy, x):
    return np.where((x > 0) & (x < 6), dy, 0.0)


SHAPES = [(2, 3, 4, 5), (7,), (3, 11), (1, 1, 1, 1)]


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("slope", [0.0, 0.1, 1.0, 2.5])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_relu(shape, slope, dtype, rng):
    # Values well away from the kink at 0, so that finite differences do not straddle it.
    x = uniform_away_from(rng, shape, -3, 3, kinks=[0.0])
    check_op(lambda x: relu_forward(x, slope), lambda x: relu_ref(x, slope), [x],
             backward=lambda dy, x: relu_backward(dy, x, slope),
             ref_backward=lambda dy, x: relu_ref_backward(dy, x, slope),
             dtype=dtype, what=f"relu(negative_slope={slope})")


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_relu6(shape, dtype, rng):
    # Both sides of both kinks (0 and 6), away from them.
    x = uniform_away_from(rng, shape, -3, 9, kinks=[0.0, 6.0])
    check_op(relu6_forward, relu6_ref, [x], backward=relu6_backward,
             ref_backward=relu6_ref_backward, dtype=dtype, what="relu6")


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
def test_values_at_the_kinks(dtype):
    x = np.array([-6.0, -0.0, 0.0, 1e-30, 6.0, 6.5, -1e-30], dtype)
    dy = np.full_like(x, 2.0)

    def want(values):  # the expected values rounded to the dtype, then compared exactly
        return np.array(values, dtype)

    assert_close(relu_forward(x, 0.5), want([-3, 0, 0, 1e-30, 6, 6.5, -0.5e-30]), 0, "relu kinks")
    # Caffe: dx = dy · ((x > 0) + negative_slope · (x <= 0)): at x = 0 the slope is negative_slope
    assert_close(relu_backward(dy, x, 0.5), want([1, 1, 1, 2, 2, 2, 1]), 0, "relu kink gradient")
    assert_close(relu6_forward(x), want([0, 0, 0, 1e-30, 6, 6, 0]), 0, "relu6 kinks")
    assert_close(relu6_backward(dy, x), want([0, 0, 0, 2, 0, 0, 0]), 0, "relu6 kink gradient")


def test_relu6_saturates_large_values():
    x = np.array([-1e30, 1e30, 5.999, 6.001])
    assert_close(relu6_forward(x), [0, 6, 5.999, 6], 0, "relu6 saturation")


def test_empty_input():
    for f in (lambda x: relu_forward(x, 0.1), relu6_forward):
        y = f(np.zeros((0, 3)))
        assert y.shape == (0, 3) and y.dtype == F64


def test_non_contiguous_input(rng):
    x = rng.standard_normal((4, 6))[:, ::2]
    assert_close(relu_forward(x, 0.2), relu_ref(x, 0.2), 0, "relu on a view")
    assert_close(relu6_forward(x * 5), relu6_ref(x * 5), 0, "relu6 on a view")


@pytest.mark.parametrize("slope", [-0.1, np.nan, np.inf])
def test_bad_negative_slope(slope, rng):
    x = rng.standard_normal(4)
    with pytest.raises(ValueError, match=r"relu1 \(ReLU\): negative_slope must be finite and >= 0"):
        relu_forward(x, slope, name="relu1")
    with pytest.raises(ValueError, match="negative_slope must be finite"):
        relu_backward(x, x, slope)


@pytest.mark.parametrize("f", [relu_backward, relu6_backward])
def test_bad_input(f, rng):
    x = rng.standard_normal((2, 3))
    with pytest.raises(ValueError, match=r"output gradient shape \(3, 2\) does not match the "
                                         r"input \(2, 3\)"):
        f(np.zeros((3, 2)), x)
    with pytest.raises(TypeError, match="output gradient is float32 but the input is float64"):
        f(np.zeros((2, 3), np.float32), x)
    with pytest.raises(TypeError, match="input must be float32 or float64"):
        f(np.zeros((2, 3)), x.astype(int))
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="input has 1 non-finite"):
        f(np.zeros((2, 3)), x)


def test_forward_bad_input():
    with pytest.raises(TypeError, match=r"relu6 \(ReLU6\): input must be float32 or float64"):
        relu6_forward(np.arange(3))
    with pytest.raises(ValueError, match="non-finite"):
        relu_forward(np.array([0.0, np.inf]))
