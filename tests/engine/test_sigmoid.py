"""engine/sigmoid.py: the sigmoid, the hard sigmoid and the hard swish, forward and backward,
against float64 NumPy references and finite differences; their layers through a Net."""

import numpy as np
import pytest
from helpers import F32, F64, assert_close, check_op, uniform_away_from

from robustcnn.engine import (HardSigmoid, HardSwish, Net, Sigmoid, hard_sigmoid_backward,
                              hard_sigmoid_forward, hard_swish_backward, hard_swish_forward,
                              sigmoid_backward, sigmoid_forward)

# References (float64, written from the defining equations).


def sigmoid_ref(x):
    return 0.5 * (1.0 + np.tanh(x / 2.0))  # the same function, another formula


def sigmoid_ref_backward(dy, x):
    s = sigmoid_ref(x)
    return dy * s * (1.0 - s)


def hard_sigmoid_ref(x, alpha, beta):
    return np.clip(alpha * x + beta, 0.0, 1.0)


def hard_sigmoid_ref_backward(dy, x, alpha, beta):
    v = alpha * x + beta
    return np.where((v > 0) & (v < 1), alpha * dy, 0.0)


def hard_swish_ref(x):
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


def hard_swish_ref_backward(dy, x):
    return dy * np.where(x < -3, 0.0, np.where(x > 3, 1.0, x / 3.0 + 0.5))


SHAPES = [(2, 3, 4, 5), (7,), (3, 11)]
IDS = lambda s: "x".join(map(str, s))  # noqa: E731


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_sigmoid(shape, dtype, rng):
    x = rng.uniform(-8, 8, shape)
    check_op(sigmoid_forward, sigmoid_ref, [x], backward=sigmoid_backward,
             ref_backward=sigmoid_ref_backward, dtype=dtype, what="sigmoid")


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("alpha,beta", [(0.2, 0.5), (1 / 6, 0.5), (0.5, -0.1), (-0.3, 0.4)])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_hard_sigmoid(shape, alpha, beta, dtype, rng):
    kinks = [-beta / alpha, (1 - beta) / alpha]
    x = uniform_away_from(rng, shape, -6, 6, kinks=kinks, margin=0.05)
    check_op(lambda x: hard_sigmoid_forward(x, alpha, beta),
             lambda x: hard_sigmoid_ref(x, alpha, beta), [x],
             backward=lambda dy, x: hard_sigmoid_backward(dy, x, alpha, beta),
             ref_backward=lambda dy, x: hard_sigmoid_ref_backward(dy, x, alpha, beta),
             dtype=dtype, what=f"hard_sigmoid({alpha}, {beta})")


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_hard_swish(shape, dtype, rng):
    x = uniform_away_from(rng, shape, -6, 6, kinks=[-3.0, 3.0], margin=0.05)
    check_op(hard_swish_forward, hard_swish_ref, [x], backward=hard_swish_backward,
             ref_backward=hard_swish_ref_backward, dtype=dtype, what="hard_swish")


def test_extremes_and_kinks():
    x = np.array([-1e4, -800.0, -3.0, 0.0, 3.0, 800.0, 1e4])
    y = sigmoid_forward(x)
    assert np.isfinite(y).all() and y[0] == 0.0 and y[-1] == 1.0  # saturates, no overflow
    assert_close(y, sigmoid_ref(x), 1e-15, "sigmoid at the extremes")
    dy = np.ones_like(x)
    # torch's derivative of the hard swish: x/3 + 1/2 on [-3, 3] ends included
    assert_close(hard_swish_backward(dy, x), [0, 0, -0.5, 0.5, 1.5, 1, 1], 0, "hard swish kinks")
    assert_close(hard_swish_forward(x), [0, 0, 0, 0, 3, 800, 1e4], 0, "hard swish values")
    assert_close(hard_sigmoid_backward(np.ones(3), np.array([-2.5, 2.5, 0.0])),
                 [0, 0, 0.2], 0, "hard sigmoid kinks")


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"hs \(HardSigmoid\): alpha and beta must be finite"):
        hard_sigmoid_forward(np.zeros(3), np.nan, 0.5, name="hs")
    with pytest.raises(ValueError, match=r"hs \(HardSigmoid\): alpha and beta must be finite"):
        HardSigmoid("hs", alpha=0.2, beta=np.inf)
    with pytest.raises(ValueError, match="output gradient shape"):
        hard_swish_backward(np.zeros(2), np.zeros(3))
    with pytest.raises(TypeError, match="input must be float32 or float64"):
        sigmoid_forward(np.arange(3))


@pytest.mark.parametrize("layer", [Sigmoid("act"), HardSigmoid("act", alpha=0.3, beta=0.4),
                                   HardSwish("act")], ids=lambda l: type(l).__name__)
def test_layers_in_a_net(layer, rng):
    """The layers' input gradient through a Net (float64) against finite differences, and
    their spec round trip."""
    from helpers import check_gradients

    net = Net([layer], (2, 3, 3), dtype=np.float64)
    x = uniform_away_from(rng, (2, 2, 3, 3), -5, 5, kinks=[-3, 3, -4 / 3, 2, 0], margin=0.05)
    dy = rng.standard_normal((2, 2, 3, 3))
    net.forward_for_backward(x)
    dx = net.backward(dy, param_grads=False)
    check_gradients(net.forward, [x], dy, [dx], what=layer.type)
    again = Net.from_spec(net.spec(), dtype=np.float64)
    assert_close(again.forward(x), net.forward(x), 0, f"{layer.type} from its spec")
