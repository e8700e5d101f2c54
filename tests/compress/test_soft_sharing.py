"""compress/soft_sharing.py: soft weight-sharing (Ullrich, Meeds & Welling 2017) — the mixture
prior's log-density against scipy.stats in float64, finite-difference checks of its gradients
(weights, means, log-variances, mixing logits), the objective's loss and weight gradients, the
merging rule on hand-made mixtures, and the method end to end on the bars net: accuracy holds,
the weights take at most J values, most are zero, and the model file holds the result."""

import math

import numpy as np
import pytest
from helpers import single_thread
from quant_nets import bars, trained_tiny_lenet
from scipy import integrate, stats
from scipy.special import logsumexp

from robustcnn.compress.methods import method_options, run_method
from robustcnn.compress.modelfile import load_model, save_model
from robustcnn.compress.soft_sharing import (MixturePrior, SoftSharingObjective, log_prior,
                                             merge_components, most_responsible, post_process,
                                             soft_share, symmetric_kl)

LAYERS = ["conv1", "ip1", "ip2"]


def random_prior(rng, components=5, pi_zero=0.9):
    means = np.concatenate([[0.0], np.sort(rng.uniform(-1, 1, components - 1))])
    return MixturePrior(means, rng.uniform(-4, -1, components), rng.normal(0, 1, components - 1),
                        pi_zero=pi_zero, gamma_zero=(50.0, 0.2), gamma_other=(3.0, 0.5))


def scipy_log_prior(w, prior):
    """log Π_i Σ_j π_j N(w_i | μ_j, σ_j²) + Σ_j log Gamma(λ_j | α_j, rate β_j), by scipy."""
    rest = (1 - prior.pi_zero) * np.exp(prior.logits) / np.exp(prior.logits).sum()
    pis = np.concatenate([[prior.pi_zero], rest])
    sigma = np.exp(0.5 * prior.log_vars)
    comps = stats.norm.logpdf(w[:, None], prior.means[None, :], sigma[None, :]) + np.log(pis)
    alpha = np.array([prior.gamma_zero[0]] + [prior.gamma_other[0]] * (prior.components - 1))
    beta = np.array([prior.gamma_zero[1]] + [prior.gamma_other[1]] * (prior.components - 1))
    hyper = stats.gamma.logpdf(np.exp(-prior.log_vars), a=alpha, scale=1 / beta)
    return logsumexp(comps, axis=1).sum() + hyper.sum()


@pytest.mark.parametrize("components", [2, 5, 17])
def test_log_prior_matches_scipy(components):
    rng = np.random.default_rng(components)
    prior = random_prior(rng, components)
    w = rng.normal(0, 0.5, 1000)
    value = log_prior(w, prior)[0]
    assert value == pytest.approx(scipy_log_prior(w, prior), rel=1e-10, abs=1e-8)
    # float32 weights (as the layers hold) read as float64
    w32 = w.astype(np.float32)
    assert log_prior(w32, prior)[0] == pytest.approx(scipy_log_prior(w32.astype(np.float64),
                                                                     prior), rel=1e-10)
    assert np.allclose(prior.pis().sum(), 1.0) and prior.pis()[0] == pytest.approx(0.9)


def test_log_prior_far_weight_is_finite():
    # a weight many σ from every component: the log-sum-exp keeps it finite
    prior = random_prior(np.random.default_rng(0))
    w = np.array([40.0, -35.0])
    value, dw, *_ = log_prior(w, prior)
    assert np.isfinite(value) and np.isfinite(dw).all()
    assert value == pytest.approx(scipy_log_prior(w, prior), rel=1e-10)


def numeric_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in range(x.size):
        old = x.flat[i]
        x.flat[i] = old + h
        up = f()
        x.flat[i] = old - h
        down = f()
        x.flat[i] = old
        g.flat[i] = (up - down) / (2 * h)
    return g


def test_log_prior_gradients_by_finite_differences():
    rng = np.random.default_rng(1)
    prior = random_prior(rng, 6)
    w = rng.normal(0, 0.5, 40)
    _, dw, dmeans, dlog_vars, dlogits = log_prior(w, prior)

    def value():
        return log_prior(w, prior)[0]

    with single_thread():
        assert np.allclose(dw, numeric_grad(value, w), rtol=1e-6, atol=1e-6)
        num_means = numeric_grad(value, prior.means)
        assert dmeans[0] == 0  # μ_0 is fixed at zero
        assert np.allclose(dmeans[1:], num_means[1:], rtol=1e-6, atol=1e-6)
        assert np.allclose(dlog_vars, numeric_grad(value, prior.log_vars), rtol=1e-6, atol=1e-5)
        assert np.allclose(dlogits, numeric_grad(value, prior.logits), rtol=1e-6, atol=1e-6)
    assert np.abs(dlogits).max() > 1e-3 and np.abs(dmeans).max() > 1e-3  # not trivially zero


def test_objective_adds_the_scaled_prior_gradient_and_steps_the_prior():
    net, x, y = trained_tiny_lenet(epochs=1)
    flat = np.concatenate([net[n].params["weight"].reshape(-1) for n in LAYERS])
    prior = MixturePrior.initial(flat, 5)
    start = {k: getattr(prior, k).copy() for k in ("means", "log_vars", "logits")}
    value, dw, *_ = log_prior(flat, prior)
    objective = SoftSharingObjective(prior, LAYERS, tau=0.5, examples=len(x))
    xb, yb = x[:32], y[:32]
    ce, _ = net.loss_and_grad(xb, yb)
    plain = {n: net[n].grads["weight"].copy() for n in LAYERS}
    loss, logits = objective(net, xb, yb)
    scale = 0.5 / len(x)
    assert loss == pytest.approx(ce - scale * value, rel=1e-6)
    assert logits.shape[0] == 32
    start_at = 0
    for n in LAYERS:
        size = plain[n].size
        expect = plain[n] - scale * dw[start_at:start_at + size].reshape(plain[n].shape)
        assert np.allclose(net[n].grads["weight"], expect, rtol=1e-5, atol=1e-8)
        start_at += size
    assert prior.means[0] == 0
    for key, before in start.items():  # one Adam step of about its learning rate moved them
        assert not np.allclose(getattr(prior, key), before)
    assert objective.config()["objective"] == "soft-sharing"


def test_symmetric_kl_against_numerical_integration():
    for (ma, va, mb, vb) in [(0.0, 1.0, 0.5, 2.0), (0.1, 0.01, 0.12, 0.02), (1.0, 0.3, -1.0, 0.3)]:
        a, b = stats.norm(ma, math.sqrt(va)), stats.norm(mb, math.sqrt(vb))
        lo, hi = min(ma, mb) - 12 * math.sqrt(max(va, vb)), max(ma, mb) + 12 * math.sqrt(max(va, vb))
        kl_ab = integrate.quad(lambda t: a.pdf(t) * (a.logpdf(t) - b.logpdf(t)), lo, hi)[0]
        kl_ba = integrate.quad(lambda t: b.pdf(t) * (b.logpdf(t) - a.logpdf(t)), lo, hi)[0]
        assert symmetric_kl(ma, va, mb, vb) == pytest.approx(0.5 * (kl_ab + kl_ba), rel=1e-6)


def test_merge_components_on_hand_made_mixtures():
    # components 1 and 2 nearly coincide, 3 is far, 4 sits on the zero
    means = np.array([0.0, 0.30, 0.31, -0.5, 0.001])
    variances = np.array([1e-4, 4e-4, 4e-4, 4e-4, 1e-4])
    pis = np.array([0.93, 0.01, 0.03, 0.02, 0.01])
    m, v, p, mapping = merge_components(means, variances, pis, threshold=0.5)
    assert list(mapping) == [0, 1, 1, 2, 0]
    assert m[0] == 0.0 and m[1] == pytest.approx((0.01 * 0.30 + 0.03 * 0.31) / 0.04)
    assert v[1] == pytest.approx(4e-4) and p[1] == pytest.approx(0.04)
    assert v[0] == pytest.approx(1e-4) and p[0] == pytest.approx(0.94)
    assert p.sum() == pytest.approx(1.0) and m[2] == -0.5
    # a zero threshold merges nothing; a huge one merges everything into the zero
    assert len(merge_components(means, variances, pis, 0.0)[0]) == 5
    m, v, p, mapping = merge_components(means, variances, pis, 1e9)
    assert list(m) == [0.0] and (mapping == 0).all() and p[0] == pytest.approx(1.0)
    # the closest pair goes first (KL Δ²/2σ²: 1.8 for 1–2, 0.8 for 2–3); then 1 is 3.2 away
    m, _, _, mapping = merge_components([0.0, 1.0, 1.06, 1.1], [1e-3] * 4, [0.7, 0.1, 0.1, 0.1],
                                        threshold=2.0)
    assert list(mapping) == [0, 1, 2, 2] and m[2] == pytest.approx(1.08)


def test_most_responsible_is_the_largest_posterior():
    rng = np.random.default_rng(3)
    prior = random_prior(rng, 6)
    w = rng.normal(0, 0.6, 500)
    sigma = np.exp(0.5 * prior.log_vars)
    posterior = stats.norm.pdf(w[:, None], prior.means, sigma) * prior.pis()
    got = most_responsible(w, prior.means, prior.log_vars, prior.log_pis(), chunk=64)
    assert np.array_equal(got, posterior.argmax(axis=1))


def test_post_process_sets_means_and_prunes_the_zero_component(tmp_path):
    net, x, y = trained_tiny_lenet(epochs=1)
    flat = np.concatenate([net[n].params["weight"].reshape(-1) for n in LAYERS])
    prior = MixturePrior.initial(flat, 9, pi_zero=0.5, init_std=0.03)
    before = {n: net[n].dense_weight() for n in LAYERS}
    found = post_process(net, prior, kl_threshold=0.0)
    for n in LAYERS:
        w = net[n].dense_weight()
        component = most_responsible(before[n], prior.means, prior.log_vars, prior.log_pis())
        expect = np.where(component == 0, 0.0, prior.means[component]).reshape(w.shape)
        assert np.allclose(w, expect, atol=1e-7)
        assert net[n].weight_format.kind in ("sparse_codebook", "huffman")
    zeros = sum(int((net[n].dense_weight() == 0).sum()) for n in LAYERS)
    assert found["zero_share"] == pytest.approx(zeros / flat.size)
    path = tmp_path / "pp.rcnn"
    save_model(path, net)
    loaded, _ = load_model(path)
    for n in LAYERS:
        assert loaded[n].weight_format.kind == net[n].weight_format.kind
        assert np.array_equal(loaded[n].dense_weight(), net[n].dense_weight())


TINY = dict(components=9, epochs=30, lr=3e-3, lr_means=3e-3, lr_log_vars=3e-2, lr_mixing=3e-2,
            batch_size=32, tau=0.5, init_std=0.1)


@pytest.fixture(scope="module")
def trained():
    with single_thread():
        return trained_tiny_lenet()


def test_soft_sharing_end_to_end_on_bars(trained, tmp_path):
    net, x, y = trained
    xt, yt = bars(300, seed=9)
    out, report = run_method("soft-sharing", net.copy(), x, y, TINY, val=(xt, yt),
                             progress=False, log=None)
    assert [s["stage"] for s in report["stages"]][0] == "dense"
    assert report["stages"][-1]["accuracy"] >= net.accuracy(xt, yt) - 0.03
    assert out.accuracy(xt, yt) == pytest.approx(report["stages"][-1]["accuracy"])
    values = np.unique(np.concatenate([out[n].dense_weight().reshape(-1) for n in LAYERS]))
    assert values.size <= TINY["components"] and np.any(values == 0)
    mixture = report["mixture"]
    assert mixture["zero_share"] >= 0.5
    assert len(mixture["means"]) == len(mixture["stds"]) == len(mixture["pis"]) <= 9
    for n in LAYERS:
        assert out[n].weight_format.kind in ("sparse_codebook", "huffman")
        means32 = np.asarray(mixture["means"], dtype=np.float32)  # the layers' dtype
        assert np.isin(np.unique(out[n].dense_weight()), means32).all()
    path = tmp_path / "soft.rcnn"
    save_model(path, out)
    loaded, _ = load_model(path)
    assert np.array_equal(loaded.logits(xt), out.logits(xt))
    dense_bytes = 4 * sum(net[n].dense_weight().size for n in LAYERS)
    stored = sum(out[n].weight_format.stored_bytes() for n in LAYERS)
    assert stored < dense_bytes / 8


def test_soft_share_returns_what_it_found(trained):
    net, x, y = trained
    found = soft_share(net.copy(), x, y, **{**TINY, "epochs": 1}, huffman=False, progress=False)
    assert set(found) == {"means", "stds", "pis", "zero_share", "formats"}
    assert set(found["formats"].values()) == {"sparse_codebook"}


@pytest.mark.parametrize("options, message", [
    ({"components": 1}, "components must be an integer 2..256"),
    ({"components": 300}, "components must be an integer 2..256"),
    ({"pi_zero": 1.0}, "pi_zero must be in (0, 1)"),
    ({"tau": -1.0}, "tau must be finite and >= 0"),
    ({"epochs": -1}, "epochs must be >= 0"),
    ({"init_std": 0.0}, "init_std must be finite and > 0"),
    ({"kl_threshold": -1.0}, "kl_threshold must be >= 0"),
    ({"gamma_zero": "5000"}, "gamma_zero must be 'alpha/beta'"),
    ({"gamma_other": "1/0"}, "gamma_other (alpha, beta) must be finite and > 0"),
    ({"components": "many"}, "option components must be a int"),
    ({"nope": 1}, "unknown option 'nope'"),
])
def test_bad_options_give_one_clear_line(trained, options, message):
    net, x, y = trained
    with pytest.raises(ValueError, match=None) as err:
        run_method("soft-sharing", net.copy(), x, y, {"epochs": 0, **options}, progress=False,
                   log=None)
    text = str(err.value)
    assert message in text and "\n" not in text
    assert "soft-sharing" in text


def test_method_options_types():
    options = method_options("soft-sharing", {"components": "5", "tau": "0.01", "huffman": "no"})
    assert options["components"] == 5 and options["tau"] == 0.01 and options["huffman"] is False
