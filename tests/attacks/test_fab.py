"""FAB and FAB-T: on affine classifiers, whose minimal perturbations are known in closed form,
and on a trained convnet: the eps rule, targets, the box, determinism."""

import numpy as np
import pytest
from attack_nets import bars, make_linear_net, trained_bars_nets

from robustcnn.attacks import deepfool
from robustcnn.attacks.fab import fab, fab_t
from robustcnn.attacks.norms import perturbation_norms

W = np.array([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, 1.0], [-1.0, 0.0, 2.0, 0.5]])
B = np.array([0.1, 0.0, -0.2])


@pytest.fixture(scope="module")
def bars_net():
    return trained_bars_nets()[0]


def affine_distances(x, y, norm, targets=None):
    """min_{s≠y} |z_s − z_y| / ‖w_s − w_y‖_dual for logits z = Wx + B (no box)."""
    z = x @ W.T + B
    out = []
    for n in range(len(x)):
        classes = [targets[n]] if targets is not None else [s for s in range(3) if s != y[n]]
        dists = []
        for s in classes:
            w = W[s] - W[y[n]]
            dual = np.abs(w).sum() if norm == "linf" else np.linalg.norm(w)
            dists.append(abs(z[n, s] - z[n, y[n]]) / dual)
        out.append(min(dists))
    return np.array(out)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_finds_the_nearest_boundary_of_an_affine_classifier(norm, rng):
    net = make_linear_net(W, B)
    x = rng.uniform(0.3, 0.7, (12, 4))
    y = net.predict(x)
    adv, info = fab(net, x, y, None, norm=norm, n_iter=20, clip=None, return_info=True)
    exact = affine_distances(x, y, norm)
    assert np.all(net.predict(adv) != y)
    found = perturbation_norms(x, adv)[norm]
    np.testing.assert_allclose(info["norms"], found, rtol=1e-12)
    # Never below the minimum (that would not be adversarial), and at most the overshoot above.
    assert np.all(found >= exact * (1 - 1e-9))
    assert np.all(found <= exact * 1.06)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_fab_reaches_the_target_at_its_distance(norm, rng):
    net = make_linear_net(W, B)
    x = rng.uniform(0.3, 0.7, (12, 4))
    pred = net.predict(x)
    targets = (pred + 1) % 3
    adv = fab(net, x, targets, None, norm=norm, n_iter=20, clip=None, targeted=True)
    np.testing.assert_array_equal(net.predict(adv), targets)
    # The target's hyperplane is reached; the third class may win on the way, so only the
    # lower bound is exact.
    found = perturbation_norms(x, adv)[norm]
    assert np.all(found >= affine_distances(x, pred, norm, targets) * (1 - 1e-9))


def test_eps_keeps_only_perturbations_within_it(rng):
    net = make_linear_net(W, B)
    x = rng.uniform(0.3, 0.7, (12, 4))
    y = net.predict(x)
    exact = affine_distances(x, y, "l2")
    eps = float(np.median(exact))
    adv, info = fab(net, x, y, eps, norm="l2", n_iter=20, return_info=True)
    sizes = perturbation_norms(x, adv)["l2"]
    assert sizes.max() <= eps * (1 + 1e-6)
    np.testing.assert_array_equal(info["fooled"], net.predict(adv) != y)
    np.testing.assert_array_equal(adv[~info["fooled"]], x[~info["fooled"]])
    assert np.all(info["fooled"][exact < 0.9 * eps]) and not info["fooled"][exact > eps].any()


@pytest.mark.parametrize("norm, eps", [("linf", 0.2), ("l2", 0.9)])
def test_fab_t_on_a_trained_convnet(bars_net, norm, eps):
    x, y = bars(40, seed=11)
    adv, info = fab_t(bars_net, x, y, eps, norm=norm, n_iter=30, return_info=True)
    assert adv.dtype == np.float32 and adv.min() >= 0 and adv.max() <= 1
    assert perturbation_norms(x, adv)[norm].max() <= eps * (1 + 1e-6)
    np.testing.assert_array_equal(info["fooled"], bars_net.predict(adv) != y)
    assert info["fooled"].any()
    assert info["targets"].shape == (40, 2)
    np.testing.assert_array_equal(adv, fab_t(bars_net, x, y, eps, norm=norm, n_iter=30))
    # Restarts never lose what the first run found.
    more = fab_t(bars_net, x, y, eps, norm=norm, n_iter=30, restarts=2, return_info=True)[1]
    assert np.all(more["fooled"][info["fooled"]])


def test_fab_is_smaller_than_deepfool(bars_net):
    x, y = bars(40, seed=12)
    mine = perturbation_norms(x, fab(bars_net, x, y, None, norm="l2", n_iter=50))["l2"]
    theirs = perturbation_norms(x, deepfool(bars_net, x, y))["l2"]
    assert np.median(mine) <= np.median(theirs)


def test_eps_zero_and_examples_already_wrong(bars_net):
    x, y = bars(10, seed=13)
    np.testing.assert_array_equal(fab(bars_net, x, y, 0.0), x)
    wrong = (y + 1) % 3
    np.testing.assert_array_equal(fab_t(bars_net, x, wrong, 0.3, n_iter=5), x)


@pytest.mark.parametrize("attack, kwargs, match", [
    (fab, dict(n_iter=0), "n_iter"), (fab, dict(restarts=0), "restarts"),
    (fab, dict(alpha_max=2), "alpha_max"), (fab, dict(eta=0.5), "eta"),
    (fab, dict(beta=0), "beta"), (fab, dict(norm="l0"), "norm"),
    (fab_t, dict(targeted=True), "targeted"), (fab_t, dict(n_targets=0), "n_targets")])
def test_bad_arguments(attack, kwargs, match):
    net = make_linear_net(W, B)
    with pytest.raises(ValueError, match=f"^{attack.__name__}: .*{match}"):
        attack(net, np.full((2, 4), 0.5), None, 0.1, **kwargs)
