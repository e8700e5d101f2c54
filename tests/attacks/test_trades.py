"""TRADES (Zhang et al. 2019): the loss and its logit gradients against the definition and
finite differences, the parameter gradients of the objective by finite differences on a
float64 net, the inner maximisation raising the KL inside the ball, and the settings record."""

import numpy as np
import pytest
from attack_nets import bars, make_convnet

from robustcnn.attacks.adversarial_training import AdversarialObjective, adversarial_objective
from robustcnn.attacks.trades import (TradesObjective, kl_divergence, trades_loss,
                                      trades_perturbation)
from robustcnn.engine.train import Schedule, fit


def reference_loss(z, za, y, beta):
    """The definition, written out per example in float64 (no shared helper)."""
    out = []
    for zn, zan, yn in zip(z, za, y):
        p = np.exp(zn - zn.max()) / np.exp(zn - zn.max()).sum()
        q = np.exp(zan - zan.max()) / np.exp(zan - zan.max()).sum()
        out.append(-np.log(p[yn]) + beta * np.sum(p * np.log(p / q)))
    return np.array(out)


def test_loss_and_logit_gradients_match_the_definition_and_finite_differences():
    rng = np.random.default_rng(0)
    z, za = rng.normal(0, 2, (5, 4)), rng.normal(0, 2, (5, 4))
    y = rng.integers(0, 4, 5)
    loss, dz, dza, kl = trades_loss(z, za, y, beta=6.0)
    np.testing.assert_allclose(loss, reference_loss(z, za, y, 6.0), rtol=1e-12)
    np.testing.assert_allclose(kl, kl_divergence(z, za), rtol=1e-12)
    assert (kl >= 0).all()
    h = 1e-6
    for which, grad in ((0, dz), (1, dza)):
        numeric = np.zeros_like(grad)
        for idx in np.ndindex(*z.shape):
            args = [z.copy(), za.copy()]
            args[which][idx] += h
            up = reference_loss(*args, y, 6.0)[idx[0]]
            args[which][idx] -= 2 * h
            down = reference_loss(*args, y, 6.0)[idx[0]]
            numeric[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, numeric, atol=1e-7)
    # β = 0 is cross-entropy; equal logits make the KL vanish.
    l0, _, dza0, _ = trades_loss(z, z, y, beta=6.0)
    np.testing.assert_allclose(l0, reference_loss(z, z, y, 0.0), rtol=1e-12)
    np.testing.assert_allclose(dza0, 0.0, atol=1e-15)


def flat_params(net):
    return {f"{l.name}/{k}": v for l in net.layers for k, v in l.params.items()}


def test_objective_parameter_gradients_by_finite_differences():
    """The objective's gradients, with x' fixed, against central differences of the loss."""
    net = make_convnet(np.float64, seed=1)
    x, y = bars(6, seed=2)
    x = x.astype(np.float64)
    objective = TradesObjective(eps=0.1, beta=6.0, steps=3, seed=0)
    x_adv = objective.adversarial_batch(net, x)
    objective.adversarial_batch = lambda net_, xb: x_adv  # hold x' fixed for the check
    net.train()
    loss, logits = objective(net, x, y)
    grads = {f"{l}/{k}": g.copy() for l, d in net.grads.items() for k, g in d.items()}

    def total():
        z = net.logits(x)
        za = net.logits(x_adv)
        return reference_loss(z, za, y, 6.0).mean()

    assert loss == pytest.approx(total(), rel=1e-12)
    rng = np.random.default_rng(0)
    h = 1e-6
    for key, w in flat_params(net).items():
        for i in rng.choice(w.size, size=min(6, w.size), replace=False):
            flat = w.reshape(-1)
            old = flat[i]
            flat[i] = old + h
            up = total()
            flat[i] = old - h
            down = total()
            flat[i] = old
            assert grads[key].reshape(-1)[i] == pytest.approx((up - down) / (2 * h),
                                                              rel=1e-5, abs=1e-8), key


def test_inner_maximisation_raises_the_kl_inside_the_ball():
    net = make_convnet(np.float32, seed=0)
    x, _ = bars(32, seed=1)
    x_adv, kl = trades_perturbation(net, x, 0.1, steps=10, seed=3)
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    start, kl0 = trades_perturbation(net, x, 0.1, steps=1, alpha=1e-9, seed=3)  # ≈ the start
    assert kl.mean() > 10 * max(kl0.mean(), 1e-12)
    assert (kl >= kl0 - 1e-6).mean() > 0.9
    # Deterministic given the seed; eps 0 returns x.
    np.testing.assert_array_equal(trades_perturbation(net, x, 0.1, steps=10, seed=3)[0], x_adv)
    np.testing.assert_array_equal(trades_perturbation(net, x, 0.0, seed=3)[0], x)


def test_trades_training_makes_the_net_robust_to_pgd():
    from robustcnn.attacks import pgd

    x, y = bars(512, seed=0)
    xt, yt = bars(256, seed=1)
    results = {}
    for name, objective in (("plain", None), ("trades", TradesObjective(0.15, steps=5))):
        net = make_convnet(np.float32, seed=0)
        fit(net, x, y, epochs=6, batch_size=32, schedule=Schedule("cosine", 0.05, total=96),
            progress=False, log=None, objective=objective)
        adv = pgd(net, xt, yt, 0.15, steps=10)
        results[name] = (net.accuracy(xt, yt), net.accuracy(adv, yt))
    assert results["trades"][0] > 0.9
    assert results["trades"][1] > results["plain"][1] + 0.2


def test_settings_record_builds_either_objective():
    mixed = adversarial_objective({"attack": "pgd", "eps": 0.1, "fraction": 1.0}, 3)
    assert isinstance(mixed, AdversarialObjective)
    trades = adversarial_objective({"objective": "trades", "eps": 0.1, "beta": 6, "steps": 4}, 3)
    assert trades == TradesObjective(0.1, beta=6.0, steps=4, seed=3)
    assert trades.config()["objective"] == "trades"
    with pytest.raises(ValueError, match="unknown key 'fraction'"):
        adversarial_objective({"objective": "trades", "eps": 0.1, "fraction": 1.0}, 0)
    with pytest.raises(ValueError, match="unknown objective 'madry'"):
        adversarial_objective({"objective": "madry", "eps": 0.1}, 0)
    with pytest.raises(ValueError, match="needs eps"):
        adversarial_objective({"objective": "trades"}, 0)
    with pytest.raises(ValueError, match="beta must be"):
        TradesObjective(0.1, beta=-1)
    # The study's training recipes build it from the same record.
    from robustcnn.study.build import training_objective

    recipe = {"adversarial": {"objective": "trades", "eps": 0.1, "beta": 6.0, "steps": 2}}
    assert training_objective(recipe, 5) == TradesObjective(0.1, steps=2, seed=5)
