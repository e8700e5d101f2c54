"""certify/smoothing.py: Cohen et al.'s CERTIFY and PREDICT, the Clopper–Pearson bound, noise
training.

The Clopper–Pearson bound is checked against scipy.stats.binomtest's exact interval and against
its defining equation; CERTIFY against the radius a linear classifier's smoothed version has in
closed form (Cohen et al. §3.1: the distance to the boundary).
"""

import numpy as np
import pytest
from scipy import stats

from robustcnn.certify.evaluate import certify_model
from robustcnn.certify.smoothing import (ABSTAIN, GaussianNoiseObjective, certified_accuracy,
                                         certify, clopper_pearson_lower, predict, vote_counts)
from robustcnn.engine import Linear, Net


@pytest.mark.parametrize("k, n", [(0, 10), (1, 10), (7, 10), (10, 10), (9_990, 10_000),
                                  (100_000, 100_000), (51, 100)])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_against_scipy(k, n, alpha):
    got = clopper_pearson_lower(k, n, alpha)
    # the lower end of binomtest's exact two-sided interval at confidence 1 − 2α
    want = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha,
                                               method="exact").low
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    if k > 0:  # the defining equation: P(Binomial(n, p) >= k) = α at p = the bound
        assert stats.binom.sf(k - 1, n, got) == pytest.approx(alpha, rel=1e-6)


def test_clopper_pearson_all_successes_in_closed_form():
    # k = n: P(all n succeed) = p^n = α
    assert clopper_pearson_lower(50, 50, 0.001) == pytest.approx(0.001 ** (1 / 50), rel=1e-12)


def linear_net(w, b):
    """A 2-class net on (2,) inputs: logits (0, w·x + b), so class 1 iff w·x + b > 0."""
    net = Net([Linear("ip", 2)], (2,), dtype=np.float64)
    net.layer("ip").params["weight"][...] = [[0.0, 0.0], list(w)]
    net.layer("ip").params["bias"][...] = [0.0, b]
    return net


def test_certify_a_linear_classifier():
    # g(x) = class 1 with probability Φ((w·x + b) / (σ‖w‖)): the certified radius tends to the
    # distance (w·x + b)/‖w‖ to the boundary as n grows, and stays below it (1 − α likely)
    w, b, sigma = np.array([3.0, 4.0]), -1.0, 0.5
    net = linear_net(w, b)
    x = np.array([[0.5, 0.2], [0.3, 0.3], [0.1, 0.1]])
    distance = (x @ w + b) / np.linalg.norm(w)  # 0.3, 0.22, −0.06
    res = certify(net, x, [1, 1, 0], sigma=sigma, n0=100, n=100_000, alpha=0.001,
                  batch_size=20_000)
    assert res["prediction"].tolist() == [1, 1, 0]
    assert res["correct"].tolist() == [True, True, True]
    assert (res["radius"] <= np.abs(distance)).all()
    assert (res["radius"] > np.abs(distance) - 0.03).all()
    assert (res["counts"].sum(axis=1) == 100_000).all()
    p = stats.norm.cdf(np.abs(distance) / sigma)
    assert np.abs(res["counts"].max(axis=1) / 100_000 - p).max() < 0.01


def test_certify_abstains_on_the_boundary_and_predict_too():
    net = linear_net([1.0, 0.0], -0.5)
    x = np.array([[0.5, 0.5], [0.95, 0.5]])
    res = certify(net, x, [1, 1], sigma=0.25, n=2000)
    assert res["prediction"][0] == ABSTAIN and res["radius"][0] == 0
    assert res["prediction"][1] == 1 and res["radius"][1] > 0
    assert predict(net, x, sigma=0.25, n=2000).tolist() == [ABSTAIN, 1]
    assert certified_accuracy(res, [0.0, 0.1, 10.0]) == [0.5, 0.5, 0.0]


def test_certify_is_seeded():
    net = linear_net([1.0, 1.0], -1.0)
    x = np.array([[0.6, 0.5]])
    a = certify(net, x, sigma=0.3, n=500, seed=3)
    b = certify(net, x, sigma=0.3, n=500, seed=3)
    c = certify(net, x, sigma=0.3, n=500, seed=4)
    assert np.array_equal(a["counts"], b["counts"])
    assert not np.array_equal(a["counts"], c["counts"])


def test_vote_counts_batches():
    net = linear_net([1.0, 0.0], -0.5)
    counts = [vote_counts(net, np.array([0.5, 0.0]), 1.0, 1001, batch_size=bs,
                          rng=np.random.default_rng(0)) for bs in (1001, 100)]
    assert counts[0].sum() == counts[1].sum() == 1001
    assert np.array_equal(counts[0], counts[1])  # the same noise, drawn in chunks


@pytest.mark.parametrize("kwargs, match", [(dict(sigma=0), "sigma must be"),
                                           (dict(sigma=0.1, alpha=1.5), "alpha must be"),
                                           (dict(sigma=0.1, n=0), "n0 and n must be")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        certify(linear_net([1, 0], 0), np.zeros((1, 2)), **kwargs)


def test_noise_objective():
    net = linear_net([1.0, 2.0], 0.1)
    x = np.random.default_rng(0).random((8, 2))
    y = np.arange(8) % 2
    obj = GaussianNoiseObjective(0.5, seed=1)
    loss1, _ = obj(net, x, y)
    g1 = net.layer("ip").grads["weight"].copy()
    loss2, _ = obj(net, x, y)
    assert loss1 == loss2 and np.array_equal(g1, net.layer("ip").grads["weight"])
    clean, _ = net.loss_and_grad(x, y)
    assert clean != loss1
    assert obj.config() == {"objective": "gaussian_noise", "sigma": 0.5, "seed": 1}


def test_certify_model_smoothing_rows():
    net = linear_net([1.0, 0.0], -0.5)
    x = np.array([[0.9, 0.5], [0.1, 0.5], [0.52, 0.5]])
    res = certify_model(net, x, [1, 0, 1], "smoothing", [0.0, 0.2], sigma=0.25, n=1000)
    assert [r["eps"] for r in res["rows"]] == [0.0, 0.2]
    assert res["rows"][0]["certified_accuracy"] >= res["rows"][1]["certified_accuracy"]
    assert res["forward_passes"] == 3 * 1100 and res["norm"] == "l2"
    with pytest.raises(ValueError, match="needs --sigma"):
        certify_model(net, x, [1, 0, 1], "smoothing", [0.1])
