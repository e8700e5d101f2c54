"""compress/lowrank.py: full rank reproduces the net, rank r is the best rank-r approximation
(numpy's SVD), ranks_for_ratio hits its parameter budget, the factorised net trains, and the
argument errors."""

import numpy as np
import pytest

from robustcnn.compress.lowrank import factorise, ranks_for_ratio
from robustcnn.engine import BatchNorm, Conv2d, Linear, Net, ReLU
from robustcnn.models.lenet import lenet5, lenet_300_100

F64 = np.float64


def _x(n=3, shape=(1, 28, 28), seed=0):
    return np.random.default_rng(seed).random((n,) + shape)


def _branchy(dtype=F64):
    """Conv with stride/padding/dilation and a bias-free conv, named blobs, a BatchNorm."""
    return Net([
        Conv2d("c1", 6, kernel=3, stride=2, padding=1, bottom="data", top="a"),
        Conv2d("c2", 5, kernel=(3, 2), dilation=(1, 2), padding=(1, 0), bias=False,
               bottom="a", top="b"),
        BatchNorm("bn", bottom="b", top="b"),
        ReLU("r", bottom="b", top="b"),
        Linear("fc", 4, bottom="b", top="out"),
    ], (3, 9, 9), dtype=dtype, seed=1)


def test_full_rank_reproduces_the_net():
    net = lenet5(dtype=F64)
    ranks = {"conv1": 20, "conv2": 50, "ip1": 500, "ip2": 10}
    x = _x()
    np.testing.assert_allclose(factorise(net, ranks).forward(x), net.forward(x), rtol=1e-10,
                               atol=1e-11)
    net = _branchy()
    net.layer("bn").buffers["mean"][:] = 0.3
    net.layer("bn").params["beta"][:] = -0.2
    f = factorise(net, {"c1": 6, "c2": 5, "fc": 4})
    x = _x(shape=(3, 9, 9))
    np.testing.assert_allclose(f.forward(x), net.forward(x), rtol=1e-10, atol=1e-11)
    assert f.layer("c2_lr1").dilation == (1, 2) and f.layer("c1_lr1").stride == (2, 2)
    assert not f.layer("c2").bias and f.layer("c1").bias


@pytest.mark.parametrize("name,rank", [("ip1", 7), ("conv2", 4), ("conv1", 1)])
def test_rank_r_is_the_best_rank_r_approximation(name, rank):
    net = lenet5(dtype=F64)
    f = factorise(net, {name: rank})
    w = net.layer(name).dense_weight()
    mat = w.reshape(w.shape[0], -1)
    u, s, vt = np.linalg.svd(mat, full_matrices=False)
    best = (u[:, :rank] * s[:rank]) @ vt[:rank]
    w1 = f.layer(f"{name}_lr1").dense_weight().reshape(rank, -1)
    w2 = f.layer(name).dense_weight().reshape(w.shape[0], rank)
    np.testing.assert_allclose(w2 @ w1, best, atol=1e-12)
    # √S on both sides: the factors carry the same scale
    np.testing.assert_allclose(np.linalg.norm(w1, axis=1), np.linalg.norm(w2, axis=0))
    # the rest of the net is untouched, wiring included
    other = "ip2" if name != "ip2" else "ip1"
    np.testing.assert_array_equal(f.layer(other).dense_weight(),
                                  net.layer(other).dense_weight())
    assert f.output_shape == net.output_shape
    # the error of the product is the tail of the singular values (Eckart–Young)
    assert np.linalg.norm(w2 @ w1 - mat) == pytest.approx(np.sqrt((s[rank:] ** 2).sum()))


@pytest.mark.parametrize("ratio", [10, 40])
def test_ranks_for_ratio_hits_the_budget(ratio):
    net = lenet5()
    ranks = ranks_for_ratio(net, ratio)
    small = factorise(net, ranks)
    assert small.num_params() == pytest.approx(net.num_params() / ratio, rel=0.1)
    assert all(r >= 1 for r in ranks.values())


def test_ranks_for_ratio_leaves_out_layers_that_would_grow():
    # a 20×20 layer gains from rank r only if 40·r < 400 (r < 10); a 200×20 one if r < 18.2
    net = Net([Linear("square", 20), Linear("wide", 200)], (20,))
    ranks = ranks_for_ratio(net, 1.1)
    assert set(ranks) == {"wide"} and ranks["wide"] > 10
    assert factorise(net, ranks).num_params() == pytest.approx(net.num_params() / 1.1, rel=0.1)
    net = lenet_300_100()
    assert ranks_for_ratio(net, 8, layers=["ip1"]).keys() == {"ip1"}


def test_ranks_for_ratio_is_monotone_and_refuses_the_unreachable():
    net = lenet5()
    small = [factorise(net, ranks_for_ratio(net, r)).num_params() for r in (2, 5, 20)]
    assert small[0] > small[1] > small[2]
    with pytest.raises(ValueError, match=r"out of reach.*at most 144×"):
        ranks_for_ratio(net, 10_000)
    with pytest.raises(ValueError, match="ratio must be"):
        ranks_for_ratio(net, 0.5)


def test_factorised_net_trains():
    net = factorise(lenet5(seed=3), {"conv2": 5, "ip1": 20})
    net.train()
    rng = np.random.default_rng(0)
    x = rng.random((16, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    loss0, _ = net.loss_and_grad(x, y)
    assert set(net.grads) >= {"conv2_lr1", "conv2", "ip1_lr1", "ip1"}
    for _ in range(5):
        for layer, grads in net.grads.items():
            for k, g in grads.items():
                net.params[layer][k] -= 0.05 * g
        loss, _ = net.loss_and_grad(x, y)
    assert np.isfinite(loss) and loss < loss0


def test_errors():
    net = lenet5()
    with pytest.raises(ValueError, match="no layer named 'fc9'"):
        factorise(net, {"fc9": 3})
    with pytest.raises(ValueError, match=r"rank must be an integer in 1\.\.20"):
        factorise(net, {"conv1": 0})
    with pytest.raises(ValueError, match=r"rank must be an integer in 1\.\.10"):
        factorise(net, {"ip2": 11})
    with pytest.raises(ValueError, match="rank must be"):
        factorise(net, {"ip1": 2.5})
    with pytest.raises(ValueError, match="not a Linear or Conv2d"):
        factorise(net, {"pool1": 1})
    grouped = Net([Conv2d("g", 4, kernel=3, groups=2), Linear("fc", 3)], (4, 6, 6))
    with pytest.raises(ValueError, match=r"grouped convolution \(groups=2\)"):
        factorise(grouped, {"g": 1})
    with pytest.raises(ValueError, match="grouped"):
        ranks_for_ratio(grouped, 2, layers=["g"])
