"""Minimal-perturbation attacks (DeepFool, C&W L2, L-BFGS) and JSMA against what is known
analytically for linear classifiers.

For a binary linear classifier, f(x) = (w₁ − w₀)·x + (b₁ − b₀) and the smallest L2
perturbation that changes the label has length d = |f(x)| / ‖w₁ − w₀‖ (the distance to the
hyperplane f = 0). For K classes it is min_k |f_k(x)| / ‖w_k − w_y‖ when the box does not bind.
"""

import itertools

import numpy as np
import pytest

from robustcnn.attacks import carlini_wagner_l2, deepfool, jsma, lbfgs


def binary_case(seed=0, n=8, d=5, lo=0.25, hi=1.5):
    """A binary linear net and inputs whose distances to the hyperplane lie in [lo, hi]."""
    rng = np.random.default_rng(seed)
    W, b = rng.standard_normal((2, d)), rng.standard_normal(2)
    w = W[1] - W[0]
    x = []
    while len(x) < n:
        v = rng.uniform(-1, 1, d)
        dist = abs(v @ w + b[1] - b[0]) / np.linalg.norm(w)
        if lo <= dist <= hi:
            x.append(v)
    x = np.array(x)
    return W, b, x, np.abs(x @ w + b[1] - b[0]) / np.linalg.norm(w)


def l2(a, b):
    return np.linalg.norm((a - b).reshape(len(a), -1), axis=1)


# ---------------------------------------------------------------------------------------------
# DeepFool


def test_deepfool_binary_linear_is_one_exact_step(linear_net):
    W, b, x, d = binary_case()
    net = linear_net(W, b)
    w_norm = np.linalg.norm(W[1] - W[0])
    adv = deepfool(net, x, clip=None)
    assert (net.predict(adv) != net.predict(x)).all()
    # r = (|f| + 1e-4) / ‖w‖² · w, then ×(1 + overshoot): exactly, for an affine classifier.
    np.testing.assert_allclose(l2(adv, x), 1.02 * (d + 1e-4 / w_norm), rtol=1e-10)
    adv0 = deepfool(net, x, clip=None, overshoot=0.0)
    np.testing.assert_allclose(l2(adv0, x), d + 1e-4 / w_norm, rtol=1e-10)
    # The direction is the hyperplane's normal.
    delta = adv0 - x
    cos = np.abs(delta @ (W[1] - W[0])) / (l2(adv0, x) * w_norm)
    np.testing.assert_allclose(cos, 1.0, rtol=1e-12)


def test_deepfool_multiclass_linear_finds_the_nearest_hyperplane(linear_net):
    rng = np.random.default_rng(1)
    K, D = 6, 8
    W, b = rng.standard_normal((K, D)), rng.standard_normal(K)
    net = linear_net(W, b)
    x = rng.uniform(-1, 1, (10, D))
    y = net.predict(x)
    z = x @ W.T + b
    dist = np.full((len(x), K), np.inf)
    for n, k in itertools.product(range(len(x)), range(K)):
        if k != y[n]:
            dist[n, k] = (z[n, y[n]] - z[n, k]) / np.linalg.norm(W[k] - W[y[n]])
    nearest, k = dist.min(1), dist.argmin(1)
    adv = deepfool(net, x, clip=None, overshoot=0.0)
    assert (net.predict(adv) != y).all()
    np.testing.assert_allclose(l2(adv, x), nearest + 1e-4 / np.linalg.norm(W[k] - W[y], axis=1),
                               rtol=1e-10)
    # Fewer candidates can only miss the nearest hyperplane: never closer than the truth.
    adv2 = deepfool(net, x, clip=None, overshoot=0.0, candidates=2)
    assert (l2(adv2, x) >= nearest * (1 - 1e-9)).all()


def test_deepfool_clip_cap_and_early_stop(linear_net, convnet):
    net = convnet()
    x = np.random.default_rng(2).uniform(0, 1, (12, 1, 8, 8))
    y = net.predict(x)
    adv = deepfool(net, x)
    assert adv.min() >= 0 and adv.max() <= 1
    assert (net.predict(adv) != y).mean() >= 0.9
    capped = deepfool(net, x, eps=0.05)
    assert (l2(capped, x) <= 0.05 + 1e-12).all()
    # An example already misclassified w.r.t. the given label is left alone.
    wrong = (y + 1) % 3
    np.testing.assert_array_equal(deepfool(net, x[:3], wrong[:3]), x[:3])  # exact: untouched


# ---------------------------------------------------------------------------------------------
# Carlini & Wagner L2


@pytest.mark.parametrize("clip", [None, (-2.0, 2.0)])
def test_cw_finds_the_distance_to_the_hyperplane(linear_net, clip):
    W, b, x, d = binary_case(seed=3)
    net = linear_net(W, b)
    adv = carlini_wagner_l2(net, x, None, clip=clip, confidence=0.0)
    assert (net.predict(adv) != net.predict(x)).all()
    ratio = l2(adv, x) / d
    assert (ratio >= 1 - 1e-9).all(), ratio  # it must cross the hyperplane
    assert (ratio <= 1.03).all(), ratio


def test_cw_keeps_the_best_over_the_whole_search(convnet):
    # The first k values of c are the same runs whatever the number of steps, and the result
    # is the smallest successful perturbation over all of them: more steps never do worse.
    net = convnet(seed=3)
    x = np.random.default_rng(10).uniform(0, 1, (6, 1, 8, 8))
    kw = dict(max_iter=40, initial_const=0.1, learning_rate=0.05, abort_early=False)
    sizes = [l2(carlini_wagner_l2(net, x, binary_search_steps=s, **kw), x) for s in (1, 2, 3, 4)]
    for fewer, more in zip(sizes, sizes[1:]):
        ok = fewer > 0
        assert (more[ok] <= fewer[ok] * (1 + 1e-12)).all()
    assert (sizes[-1] > 0).all()


def test_cw_abort_early_saves_work(linear_net):
    W, b, x, _ = binary_case(seed=3)
    net = linear_net(W, b)
    calls = []
    forward = net.forward_for_backward
    net.forward_for_backward = lambda v, **kw: calls.append(len(v)) or forward(v, **kw)
    carlini_wagner_l2(net, x, clip=None, max_iter=200, binary_search_steps=2, abort_early=False)
    full = sum(calls)
    assert full == 2 * 200 * len(x)  # every example, every step
    calls.clear()
    carlini_wagner_l2(net, x, clip=None, max_iter=200, binary_search_steps=2, abort_early=True)
    assert sum(calls) < full


def test_cw_confidence_and_targets(linear_net):
    rng = np.random.default_rng(4)
    W, b = rng.standard_normal((3, 5)), np.zeros(3)
    net = linear_net(W, b)
    x = rng.uniform(0.3, 0.7, (6, 5))
    t = (net.predict(x) + 1) % 3
    adv = carlini_wagner_l2(net, x, t, targeted=True, clip=None, confidence=0.5)
    z = net.logits(adv)
    others = np.where(np.eye(3)[t] > 0, -np.inf, z).max(1)
    assert (z[np.arange(6), t] - others >= 0.5 - 1e-9).all()
    assert (net.predict(adv) == t).all()


def test_cw_returns_x_when_it_cannot_succeed(linear_net):
    W = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    net = linear_net(W, np.array([0.0, 0.0, -100.0]))  # class 2 never wins inside [0, 1]
    x = np.array([[0.2, 0.7], [0.9, 0.1]])
    adv = carlini_wagner_l2(net, x, np.array([2, 2]), targeted=True, max_iter=50,
                            binary_search_steps=3)
    np.testing.assert_array_equal(adv, x)  # exact: the input itself comes back


# ---------------------------------------------------------------------------------------------
# L-BFGS


def test_lbfgs_untargeted_is_close_to_minimal(linear_net):
    W, b, x, d = binary_case(seed=5)
    net = linear_net(W, b)
    adv = lbfgs(net, x, clip=None)
    assert (net.predict(adv) != net.predict(x)).all()
    ratio = l2(adv, x) / d
    assert (ratio >= 1 - 1e-9).all() and (ratio <= 1.2).all(), ratio


def test_lbfgs_targeted_reaches_the_target_inside_the_box(linear_net):
    rng = np.random.default_rng(6)
    net = linear_net(rng.standard_normal((4, 6)) * 2, rng.standard_normal(4))
    x = rng.uniform(0.2, 0.8, (5, 6))
    t = (net.predict(x) + 2) % 4
    adv = lbfgs(net, x, t, targeted=True)
    assert (net.predict(adv) == t).all()
    assert adv.min() >= 0 and adv.max() <= 1


# ---------------------------------------------------------------------------------------------
# JSMA


def ref_jsma(W, b, x, t, gamma, high=1.0):
    """Papernot et al.'s Algorithm 2 for a linear net (constant Jacobian W), brute force."""
    x = x.copy()
    alpha = W[t]
    beta = W.sum(0) - W[t]
    domain = set(np.flatnonzero(x < high))
    for _ in range(int(gamma * len(x)) // 2):
        if np.argmax(W @ x + b) == t:
            break
        best, pair = 0.0, None
        for p, q in itertools.combinations(sorted(domain), 2):
            a, bb = alpha[p] + alpha[q], beta[p] + beta[q]
            if a > 0 and bb < 0 and -a * bb > best:
                best, pair = -a * bb, (p, q)
        if pair is None:
            break
        for p in pair:
            x[p] = high
            domain.discard(p)
    return x


def test_jsma_matches_the_reference_and_reaches_the_target(linear_net):
    rng = np.random.default_rng(7)
    K, D = 4, 24
    W, b = rng.standard_normal((K, D)), rng.standard_normal(K)
    net = linear_net(W, b)
    x = rng.uniform(0, 0.5, (8, D))
    t = (net.predict(x) + 1 + np.arange(8) % 3) % K
    for gamma in (0.3, 1.0):
        adv = jsma(net, x, t, targeted=True, gamma=gamma)
        for n in range(len(x)):
            np.testing.assert_allclose(adv[n], ref_jsma(W, b, x[n], t[n], gamma), rtol=0, atol=0)
        changed = (adv != x).sum(1)
        assert (changed <= gamma * D).all() and (adv >= x).all()
    assert (net.predict(adv) == t).any()
    # Untargeted: the runner-up class is the target.
    z = x @ W.T + b
    runner = np.argsort(-z, axis=1)[:, 1]
    np.testing.assert_allclose(jsma(net, x, gamma=0.5), jsma(net, x, runner, targeted=True,
                                                              gamma=0.5), rtol=0, atol=0)


def test_jsma_reaches_a_reachable_target(linear_net):
    # Features 0..7 raise class 0 and lower the others: an easy target.
    rng = np.random.default_rng(9)
    W = rng.standard_normal((3, 30)) * 0.3
    W[0, :8], W[1:, :8] = 1.0, -0.5
    net = linear_net(W, np.array([-4.0, 0.5, 0.5]))
    x = rng.uniform(0, 0.3, (6, 30))
    assert (net.predict(x) != 0).all()
    adv = jsma(net, x, np.zeros(6, dtype=int), targeted=True, gamma=0.3)
    assert (net.predict(adv) == 0).all()
    assert ((adv != x).sum(1) <= 0.3 * 30).all()
    assert (adv[:, 8:] == x[:, 8:]).all()  # exact: only the useful features moved


@pytest.mark.parametrize("gamma", [0.1, 0.25, 0.5])
def test_jsma_budget(linear_net, gamma):
    # The target can never win, every pair qualifies: exactly 2 · floor(γ D / 2) features move.
    D = 20
    W = np.vstack([np.ones(D), -np.ones(D), -np.ones(D)])
    net = linear_net(W, np.array([-1000.0, 0.0, 0.0]))
    x = np.random.default_rng(11).uniform(0, 0.5, (3, D))
    adv = jsma(net, x, np.zeros(3, dtype=int), targeted=True, gamma=gamma)
    np.testing.assert_array_equal((adv != x).sum(1), 2 * (int(gamma * D) // 2))


def test_jsma_eps_is_the_step(linear_net):
    rng = np.random.default_rng(8)
    net = linear_net(rng.standard_normal((3, 10)), rng.standard_normal(3))
    x = rng.uniform(0, 0.5, (4, 10))
    adv = jsma(net, x, gamma=1.0, eps=0.2)
    delta = adv - x
    assert np.abs(delta).max() <= 0.2 + 1e-12
    assert np.all((np.abs(delta) < 1e-12) | (np.abs(delta - 0.2) < 1e-12))
