"""attacks/spsa.py: SPSA (Uesato et al. 2018): its gradient estimate converges to the net's
input gradient, and the attack stays in the ball, keeps to its budget and works through a net
that masks its gradients."""

import numpy as np
import pytest
from attack_nets import bars, trained_bars_nets
from helpers import single_thread

from robustcnn.attacks import pgd, random_noise
from robustcnn.attacks._common import logit_grads, margin
from robustcnn.attacks.spsa import spsa, spsa_gradient
from robustcnn.engine import Linear, Net
from robustcnn.engine.layers import EltwiseProd


@pytest.fixture(scope="module")
def nets():
    with single_thread():  # module fixtures run before conftest's per-test one
        return trained_bars_nets()


def smooth_net():
    """ip 16 → square → ip 3 on (1, 8, 8): a quadratic, smooth everywhere (float64)."""
    net = Net([Linear("ip1", 16), EltwiseProd("sq", bottom=["ip1", "ip1"]), Linear("ip2", 3)],
              input_shape=(1, 8, 8), dtype=np.float64, seed=4)
    net.params["ip1"]["bias"][...] = np.random.default_rng(5).normal(0, 0.3, 16)
    return net


def margin_gradient(net, x, y):
    """∇ₓ (z_y − z_o), o the strongest other class: the engine's own input gradient."""
    _, other = margin(net.logits(x), y, False)
    coeffs = np.zeros((len(x), 1, net.num_classes))
    coeffs[np.arange(len(x)), 0, y] = 1.0
    coeffs[np.arange(len(x)), 0, other] -= 1.0
    grads, _ = logit_grads(net, x, coeffs)
    return grads[:, 0]


def cosine(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_the_gradient_estimate_converges_to_the_input_gradient():
    net = smooth_net()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (6, 1, 8, 8))
    y = net.predict(x)
    true = margin_gradient(net, x, y)
    cos = [cosine(spsa_gradient(net, x, y, delta=0.01, samples=n, rng=rng), true).mean()
           for n in (4, 64, 1024, 16384)]
    assert all(a < b for a, b in zip(cos, cos[1:])), cos
    assert cos[0] < 0.5 and cos[-1] > 0.99, cos
    # With D = 64 Rademacher coordinates the estimate's scale is unbiased too.
    est = spsa_gradient(net, x, y, delta=0.01, samples=16384, rng=rng)
    ratio = np.linalg.norm(est.reshape(6, -1), axis=1) / np.linalg.norm(true.reshape(6, -1), axis=1)
    np.testing.assert_allclose(ratio, 1.0, atol=0.05)


def test_targeted_estimate_is_the_targeted_margins():
    net = smooth_net()
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (4, 1, 8, 8))
    z = net.logits(x)
    t = (z.argmax(1) + 1) % 3
    # max_{k≠t} z_k − z_t = −(z_t − z_o): the untargeted margin of t, negated; smooth where
    # the two other classes are not tied.
    others = np.sort(np.where(np.eye(3, dtype=bool)[t], -np.inf, z), axis=1)[:, 1:]
    clear = others[:, 1] - others[:, 0] > 0.1
    assert clear.sum() >= 2
    est = spsa_gradient(net, x, t, delta=0.01, samples=8192, rng=rng, targeted=True)
    assert (cosine(est, -margin_gradient(net, x, t))[clear] > 0.98).all()


def test_stays_in_the_ball_keeps_the_budget_and_beats_noise(nets):
    net, _ = nets
    x, y = bars(80, seed=2)
    # Adam's steps of lr = 0.01 need eps / lr = 20 steps to cross the ball: 40 steps.
    adv, info = spsa(net, x, y, 0.2, steps=40, samples=16, return_info=True)
    assert np.abs(adv - x).max() <= 0.2 * (1 + 1e-6) and adv.min() >= 0 and adv.max() <= 1
    ok = info["success"]
    np.testing.assert_array_equal(ok, net.predict(adv) != y)
    assert (info["queries"] <= 40 * (2 * 16 + 1)).all()
    assert (info["queries"][~ok] == 40 * 33).all()  # the failures ran every step
    assert (info["queries"] % 33 == 0).all()
    noise = net.accuracy(random_noise(net, x, y, 0.2), y)
    assert net.accuracy(adv, y) <= noise - 0.2


def test_works_where_the_gradient_is_masked(nets):
    _, quantized = nets
    x, y = bars(80, seed=3)
    blind = quantized.accuracy(pgd(quantized, x, y, 0.2), y)
    ours = quantized.accuracy(spsa(quantized, x, y, 0.2, steps=40, samples=16), y)
    assert blind >= 0.95 and ours <= blind - 0.2


def test_deterministic_eps_zero_and_arguments(nets):
    net, _ = nets
    x, y = bars(10, seed=4)
    a = spsa(net, x, y, 0.2, steps=3, samples=4, seed=1)
    np.testing.assert_array_equal(a, spsa(net, x, y, 0.2, steps=3, samples=4, seed=1))
    assert not np.array_equal(a, spsa(net, x, y, 0.2, steps=3, samples=4, seed=2))
    out, info = spsa(net, x, y, 0.0, return_info=True)
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(info["queries"], 0)
    for kwargs, match in [(dict(steps=0), "steps"), (dict(samples=0), "samples"),
                          (dict(delta=0), "delta"), (dict(learning_rate=-1), "learning_rate"),
                          (dict(progress="bar"), "progress")]:
        with pytest.raises(ValueError, match=f"^spsa: .*{match}"):
            spsa(net, x, y, 0.1, **kwargs)
    with pytest.raises(ValueError, match="^spsa: targeted=True needs the target classes"):
        spsa(net, x, None, 0.1, targeted=True)
