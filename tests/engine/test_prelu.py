"""engine/prelu.py: PReLU forward and backward (per-channel and shared slopes) against a NumPy
float64 reference and finite differences."""

import numpy as np
import pytest
from helpers import F32, F64, check_op, uniform_away_from

from robustcnn.engine import prelu_backward, prelu_forward


def prelu_ref(x, slope):
    a = slope.reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.where(x > 0, x, a * x)


def prelu_ref_backward(dy, x, slope):
    a = slope.reshape((1, -1) + (1,) * (x.ndim - 2))
    dx = np.where(x > 0, dy, a * dy)
    per_channel = np.where(x > 0, 0.0, dy * x).sum(axis=tuple(i for i in range(x.ndim) if i != 1))
    return dx, (per_channel.sum(keepdims=True) if slope.shape[0] == 1 else per_channel)


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape,shared", [((2, 3, 4, 5), False), ((2, 3, 4, 5), True),
                                          ((4, 7), False), ((1, 1, 3, 3), False),
                                          ((0, 3, 2, 2), False)])
def test_prelu(shape, shared, dtype, rng):
    x = uniform_away_from(rng, shape, -2, 2, kinks=[0.0])
    slope = rng.uniform(-0.5, 1.5, 1 if shared else shape[1])  # Caffe allows any slope
    check_op(prelu_forward, prelu_ref, [x, slope], backward=prelu_backward,
             ref_backward=prelu_ref_backward, wrt=(0, 1), dtype=dtype,
             what=f"prelu{shape}{' shared' if shared else ''}")


def test_prelu_hand_computed():
    x = np.array([[[[-2.0, 0.0, 3.0]]], [[[1.0, -1.0, -4.0]]]])  # (2, 1, 1, 3)
    y = prelu_forward(x, np.array([0.5]))
    np.testing.assert_allclose(y.ravel(), [-1.0, 0.0, 3.0, 1.0, -0.5, -2.0])
    dx, dslope = prelu_backward(np.ones_like(x), x, np.array([0.5]))
    np.testing.assert_allclose(dx.ravel(), [0.5, 0.5, 1.0, 1.0, 0.5, 0.5])
    np.testing.assert_allclose(dslope, [-2.0 + 0.0 - 1.0 - 4.0])  # Σ x over x ≤ 0


def test_prelu_bad_input(rng):
    x = rng.standard_normal((2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"p1 \(PReLU\): slope shape \(2,\) must be \(1,\) or "
                                         r"the 3 channels"):
        prelu_forward(x, np.ones(2), name="p1")
    with pytest.raises(ValueError, match=r"input must be \(N, C\) or \(N, C, H, W\)"):
        prelu_forward(x[0], np.ones(3))
    with pytest.raises(TypeError, match="slope is float32 but the input is float64"):
        prelu_forward(x, np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match="output gradient shape"):
        prelu_backward(x[:1], x, np.ones(3))
