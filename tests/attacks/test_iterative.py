"""FGM (L2), BIM, ILLC and PGD against NumPy re-implementations on linear softmax models.

For logits z = W x + b and softmax cross-entropy, ∇ₓ L(x, y) = Wᵀ (softmax(z) − onehot(y)):
the references below compute every step from that formula, independently of the engine.
"""

import numpy as np
import pytest

from robustcnn.attacks import ATTACKS, bim, fgm, illc, pgd
from robustcnn.attacks.bim import kurakin_defaults

W = np.array([[1.0, -2.0, 0.5, 0.3], [-1.0, 1.0, 2.0, -0.7], [0.2, 0.4, -1.5, 1.1]])
B = np.array([0.1, -0.2, 0.05])


def softmax(z):
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def ref_grad(x, y):
    return (softmax(x @ W.T + B) - np.eye(len(B))[y]) @ W


def ref_loss(x, y):
    z = x @ W.T + B
    m = z.max(1)
    return np.log(np.exp(z - m[:, None]).sum(1)) + m - z[np.arange(len(y)), y]


def ref_project(d, eps, norm):
    if norm == "linf":
        return np.clip(d, -eps, eps)
    n = np.linalg.norm(d, axis=1, keepdims=True)
    return d * np.minimum(1, eps / np.maximum(n, 1e-300))


def ref_direction(g, norm):
    if norm == "linf":
        return np.sign(g)
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def ref_iterate(x, y, start, eps, alpha, steps, norm, targeted):
    xa = start.copy()
    for _ in range(steps):
        g = ref_grad(xa, y)
        xa = np.clip(xa + (-alpha if targeted else alpha) * ref_direction(g, norm), 0, 1)
        xa = np.clip(x + ref_project(xa - x, eps, norm), 0, 1)
    return xa


def ref_start(x, eps, norm, seed, restart):
    # The documented draw of pgd's restart r, re-derived: L∞ uniform coordinates; L2 normals
    # for the direction, then uniform radii raised to 1/d.
    rng = np.random.default_rng([seed, restart])
    if norm == "linf":
        delta = rng.uniform(-eps, eps, size=x.shape)
    else:
        g = rng.standard_normal(size=x.shape)
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        delta = g * (eps * rng.uniform(0, 1, size=len(x)) ** (1 / x.shape[1]))[:, None]
    return np.clip(x + delta, 0, 1)


@pytest.fixture
def data():
    rng = np.random.default_rng(5)
    x = rng.uniform(0.1, 0.9, size=(6, 4))
    y = np.array([0, 1, 2, 0, 1, 2])
    return x, y


def test_fgm_l2_matches_the_hand_computed_step(linear_net, data):
    x, y = data
    net = linear_net(W, B)
    g = ref_grad(x, y)
    expected = np.clip(x + 0.3 * g / np.linalg.norm(g, axis=1, keepdims=True), 0, 1)
    np.testing.assert_allclose(fgm(net, x, y, 0.3, norm="l2"), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ATTACKS["fgm-l2"](net, x, y, 0.3), expected, rtol=0, atol=1e-12)
    t = (y + 1) % 3
    gt = ref_grad(x, t)
    np.testing.assert_allclose(
        fgm(net, x, t, 0.3, norm="l2", targeted=True, clip=None),
        x - 0.3 * gt / np.linalg.norm(gt, axis=1, keepdims=True), rtol=0, atol=1e-12)


def test_bim_matches_the_reference_and_kurakins_defaults(linear_net, data):
    x, y = data
    net = linear_net(W, B)
    # eps = 8/255: α = 1/255 and min(8 + 4, 1.25 · 8) = 10 iterations.
    expected = ref_iterate(x, y, x, 8 / 255, 1 / 255, 10, "linf", False)
    np.testing.assert_allclose(bim(net, x, y, 8 / 255), expected, rtol=0, atol=1e-12)
    # The same model on a 0–255 scale (weights / 255): the defaults are α = 1, same count.
    net255 = linear_net(W / 255, B)
    np.testing.assert_allclose(bim(net255, 255 * x, y, 8, clip=(0, 255)), 255 * expected,
                               rtol=0, atol=1e-9)
    expected = ref_iterate(x, y, x, 0.2, 0.05, 7, "linf", True)
    np.testing.assert_allclose(bim(net, x, y, 0.2, alpha=0.05, steps=7, targeted=True), expected,
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("eps, clip, alpha, steps", [
    (8 / 255, (0, 1), 1 / 255, 10),      # min(8 + 4, 10)
    (2 / 255, (0, 1), 1 / 255, 3),       # min(6, 2.5) → 3
    (0.3, (0, 1), 1 / 255, 81),          # 76.5 levels: min(80.5, 95.6) → 81
    (16, (0, 255), 1.0, 20),             # min(20, 20)
    (0.5 / 255, (0, 1), 1 / 255, 1),     # at least one step
    (4 / 255, None, 1 / 255, 5),         # clip None: a range of 1
])
def test_kurakin_defaults(eps, clip, alpha, steps):
    got_alpha, got_steps = kurakin_defaults(eps, clip)
    assert got_alpha == pytest.approx(alpha, rel=1e-12)
    assert got_steps == steps


def test_illc_targets_the_least_likely_class(linear_net, data):
    x, y = data
    net = linear_net(W, B)
    ll = (x @ W.T + B).argmin(1)
    expected = ref_iterate(x, ll, x, 0.1, 0.02, 6, "linf", True)
    np.testing.assert_allclose(illc(net, x, y, 0.1, alpha=0.02, steps=6), expected, rtol=0,
                               atol=1e-12)
    # The labels do not matter.
    np.testing.assert_allclose(illc(net, x, None, 0.1, alpha=0.02, steps=6), expected, rtol=0,
                               atol=1e-12)
    # With enough budget ILLC reaches the least-likely class here.
    far = illc(net, x, y, 1.0, alpha=0.05, steps=60)
    assert (net.predict(far) == ll).all()


@pytest.mark.parametrize("norm, eps", [("linf", 0.15), ("l2", 0.4)])
def test_pgd_matches_the_reference_step_by_step(linear_net, data, norm, eps):
    x, y = data
    net = linear_net(W, B)
    seed, steps, alpha = 11, 5, 0.05
    expected = ref_iterate(x, y, ref_start(x, eps, norm, seed, 0), eps, alpha, steps, norm, False)
    got = pgd(net, x, y, eps, norm=norm, alpha=alpha, steps=steps, seed=seed)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    # Another seed starts elsewhere.
    other = pgd(net, x, y, eps, norm=norm, alpha=alpha, steps=steps, seed=seed + 1)
    assert np.abs(other - got).max() > 1e-6


def test_pgd_restarts_keep_the_first_success_else_the_highest_loss(linear_net):
    rng = np.random.default_rng(2)
    x = rng.uniform(0.2, 0.8, size=(40, 4))
    net = linear_net(W, B)
    y = net.predict(x)
    eps, alpha, steps, seed, restarts = 0.08, 0.02, 3, 4, 4
    runs = [ref_iterate(x, y, ref_start(x, eps, "linf", seed, r), eps, alpha, steps, "linf", False)
            for r in range(restarts)]
    fooled = np.array([net.predict(r) != y for r in runs])  # (restarts, N)
    losses = np.array([ref_loss(r, y) for r in runs])
    expected = np.empty_like(x)
    for n in range(len(x)):
        hits = np.flatnonzero(fooled[:, n])
        r = hits[0] if hits.size else int(np.argmax(losses[:, n]))
        expected[n] = runs[r][n]
    # The case must exercise both rules, and a later restart must matter somewhere.
    assert fooled.any(0).sum() not in (0, len(x))
    assert (fooled.any(0) & ~fooled[0]).any()
    assert (~fooled.any(0) & (losses.argmax(0) != 0)).any()
    got = pgd(net, x, y, eps, alpha=alpha, steps=steps, restarts=restarts, seed=seed)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_pgd_default_step_and_batch_independence(linear_net, data):
    x, y = data
    net = linear_net(W, B)
    expected = ref_iterate(x, y, ref_start(x, 0.1, "linf", 0, 0), 0.1, 2.5 * 0.1 / 40, 40,
                           "linf", False)
    np.testing.assert_allclose(pgd(net, x, y, 0.1), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pgd(net, x, y, 0.1, batch_size=4), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ATTACKS["pgd-linf"](net, x, y, 0.1), expected, rtol=0, atol=1e-12)


def test_pgd_without_random_start_is_bim(linear_net, data):
    x, y = data
    net = linear_net(W, B)
    np.testing.assert_allclose(pgd(net, x, y, 0.1, alpha=0.01, steps=12, random_init=False),
                               bim(net, x, y, 0.1, alpha=0.01, steps=12), rtol=0, atol=1e-12)


def test_targeted_iterative_attacks_reach_their_target(linear_net, data):
    x, y = data
    net = linear_net(W, B)
    t = (net.predict(x) + 1) % 3
    for attack, kw in [(bim, dict(alpha=0.05, steps=40)), (pgd, dict(steps=40)),
                       (pgd, dict(norm="l2", steps=40))]:
        adv = attack(net, x, t, 1.0, targeted=True, **kw)
        assert (net.predict(adv) == t).all(), attack.__name__
