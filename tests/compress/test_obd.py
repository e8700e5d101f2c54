"""Optimal Brain Damage: the Gauss–Newton diagonal against finite differences of the gradient
(exact for nets piecewise linear in each weight), the sampled estimator's mean against the
exact diagonal, per-example conv gradients against the engine's, saliency pruning."""

import numpy as np
import pytest

from robustcnn.compress.obd import (_conv_columns, hessian_diagonal, obd_prune, saliency,
                                    saliency_mask, squared_example_grads)
from robustcnn.engine import Conv2d, Linear, MaxPool2d, Net, ReLU


def small_net(seed=0, **conv):
    net = Net([Conv2d("conv1", 4, kernel=3, **conv), ReLU("relu1"), MaxPool2d("pool1", 2, 2),
               Linear("ip1", 8), ReLU("relu2"), Linear("ip2", 4)],
              input_shape=(2, 8, 8), dtype=np.float64, seed=seed)
    rng = np.random.default_rng(seed + 7)
    for layer in net.params.values():
        layer["bias"][...] = rng.normal(0.0, 0.1, layer["bias"].shape)
    return net


def data(n=6, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, 2, 8, 8)), rng.integers(0, 4, n)


def test_diagonal_equals_finite_differences_of_the_gradient():
    net = small_net()
    x, y = data()
    h = hessian_diagonal(net, x, mode="exact", batch_size=4)
    rng = np.random.default_rng(0)
    step = 1e-5
    for name in ("conv1", "ip1", "ip2"):
        w = net.params[name]["weight"].reshape(-1)
        for i in rng.choice(w.size, size=8, replace=False):
            old = w[i]
            w[i] = old + step
            net.loss_and_grad(x, y)
            up = net.grads[name]["weight"].reshape(-1)[i]
            w[i] = old - step
            net.loss_and_grad(x, y)
            down = net.grads[name]["weight"].reshape(-1)[i]
            w[i] = old
            numeric = (up - down) / (2 * step)
            assert h[name].reshape(-1)[i] == pytest.approx(numeric, rel=1e-5, abs=1e-9), name
    assert all((v >= 0).all() for v in h.values())


def test_sampled_estimator_is_unbiased():
    net = small_net(seed=2)
    x, _ = data(4, seed=3)
    exact = hessian_diagonal(net, x, layers=["ip1", "ip2"], mode="exact")
    # The mean over 400 copies of x is the mean of 400 independent draws per example.
    mean = hessian_diagonal(net, np.tile(x, (400, 1, 1, 1)), layers=["ip1", "ip2"],
                            mode="sampled", batch_size=400)
    for name in ("ip1", "ip2"):
        big = exact[name] > 0.2 * exact[name].max()
        np.testing.assert_allclose(mean[name][big], exact[name][big], rtol=0.25)
        assert not np.allclose(mean[name], exact[name], rtol=1e-3)  # it is an estimate


@pytest.mark.parametrize("conv", [{}, {"stride": 2, "padding": 1}, {"dilation": 2},
                                  {"groups": 2, "padding": 1}])
def test_per_example_conv_gradients_sum_to_the_engines(conv):
    net = small_net(**{k: v for k, v in conv.items()})
    x, _ = data(3)
    layer = net.layer("conv1")
    rng = np.random.default_rng(0)
    dy = rng.normal(size=(3,) + layer.geom.out_shape)
    from robustcnn.engine import conv2d_backward

    per = [conv2d_backward(dy[r:r + 1], x[r:r + 1], layer.dense_weight(), **conv)[1]
           for r in range(3)]
    np.testing.assert_allclose(squared_example_grads(layer, x, dy),
                               sum(p ** 2 for p in per), rtol=1e-10)
    assert _conv_columns(x, layer).shape[1] == conv.get("groups", 1)


def test_saliency_masks_keep_the_most_salient_and_keep_zeros_pruned():
    w = np.array([[0.0, 1.0, -2.0], [3.0, 0.5, 0.0]])
    s = np.array([[9.0, 1.0, 5.0], [2.0, 7.0, 8.0]])
    mask = saliency_mask(s, w, 0.5)
    np.testing.assert_array_equal(mask, [[False, False, True], [True, True, False]])
    assert saliency_mask(s, w, 1.0).sum() == 4  # never more than the non-zeros


def test_obd_prune_and_saliency_differ_from_magnitude():
    net = small_net(seed=4)
    x, _ = data(8, seed=5)
    sal = saliency(net, x)
    w = net.layer("ip1").dense_weight()
    np.testing.assert_allclose(sal["ip1"], 0.5 * hessian_diagonal(net, x)["ip1"] * w ** 2)
    kept = obd_prune(net, x, {"ip1": 0.25})
    assert net.layer("ip1").weight_format.kind == "csr"
    assert kept["ip1"] == pytest.approx(0.25, abs=1 / w.size)
    with pytest.raises(ValueError, match="mode must be"):
        hessian_diagonal(net, x, mode="fisher")
