"""HYDRA (compress/hydra.py): the scaled initialisation and top-k masks, the straight-through
score gradients against finite differences of a continuous mask, the score optimisation with
the weights frozen."""

import numpy as np
import pytest

from robustcnn.compress.hydra import (HydraOptions, optimise_scores, score_gradients,
                                      scaled_scores, topk_mask)
from robustcnn.engine import Conv2d, Linear, MaxPool2d, Net, ReLU


def small_net(dtype=np.float64, seed=0):
    net = Net([Conv2d("conv1", 3, kernel=3), ReLU("relu1"), MaxPool2d("pool1", 2, 2),
               Linear("ip1", 8), ReLU("relu2"), Linear("ip2", 3)],
              input_shape=(1, 8, 8), dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 3)
    for layer in net.params.values():
        layer["bias"][...] = rng.normal(0.0, 0.1, layer["bias"].shape)
    return net


def bars(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.uniform(0.0, 0.3, (n, 1, 8, 8))
    for i, k in enumerate(y):
        x[i, 0, 2 * k + 1:2 * k + 3, 1:7] += 0.5
    return x, y

def test_scaled_initialisation_and_topk():
    w = np.array([[0.5, -2.0, 1.0], [0.0, 0.25, -1.0]])
    s = scaled_scores(w)
    np.testing.assert_allclose(s, np.sqrt(6 / 3) * w / 2.0)
    np.testing.assert_array_equal(topk_mask(s, 0.5), [[False, True, True], [False, False, True]])
    # The first mask is magnitude pruning's.
    rng = np.random.default_rng(0)
    big = rng.normal(size=(20, 30))
    np.testing.assert_array_equal(topk_mask(scaled_scores(big), 0.1), topk_mask(big, 0.1))


def test_score_gradients_by_finite_differences_of_the_mask():
    """∂L/∂s (straight-through) is ∂L/∂M at the binary mask: checked by moving one mask
    value continuously."""
    net = small_net()
    x, y = bars(8)
    weights = {n: net.layer(n).params["weight"].copy() for n in ("conv1", "ip1", "ip2")}
    masks = {n: topk_mask(scaled_scores(w), 0.6).astype(np.float64) for n, w in weights.items()}
    _, _, grads = score_gradients(net, weights, masks, x, y)
    rng = np.random.default_rng(1)
    h = 1e-6
    for name in weights:
        for i in rng.choice(weights[name].size, size=6, replace=False):
            values = []
            for sign in (1, -1):
                m = {k: v.copy() for k, v in masks.items()}
                m[name].reshape(-1)[i] += sign * h
                values.append(score_gradients(net, weights, m, x, y)[0])
            numeric = (values[0] - values[1]) / (2 * h)
            assert grads[name].reshape(-1)[i] == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_score_optimisation_lowers_the_loss_and_freezes_the_weights():
    net = small_net(np.float32)
    x, y = bars(256)
    x = x.astype(np.float32)
    before = {n: net.layer(n).params["weight"].copy() for n in ("ip1",)}
    bias = net.params["ip1"]["bias"].copy()
    masks, scores, losses = optimise_scores(net, x, y, {"ip1": 0.3},
                                            HydraOptions(score_epochs=4, score_lr=0.5),
                                            batch_size=32)
    assert losses[-1] < losses[0]
    assert masks["ip1"].sum() == round(0.3 * masks["ip1"].size)
    np.testing.assert_array_equal(net.layer("ip1").params["weight"],
                                  before["ip1"] * masks["ip1"])
    np.testing.assert_array_equal(net.params["ip1"]["bias"], bias)  # frozen
