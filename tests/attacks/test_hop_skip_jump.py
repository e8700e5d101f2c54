"""attacks/hop_skip_jump.py: HopSkipJump (Chen, Jordan & Wainwright 2020) reads only labels,
fools every example without a bound, shrinks its perturbation as the queries grow, keeps to its
budget, and with an eps counts only the examples it fooled within eps."""

import numpy as np
import pytest
from attack_nets import bars, trained_bars_nets
from helpers import single_thread

from robustcnn.attacks import carlini_wagner_l2
from robustcnn.attacks.hop_skip_jump import hop_skip_jump


@pytest.fixture(scope="module")
def nets():
    with single_thread():  # module fixtures run before conftest's per-test one
        return trained_bars_nets()


class LabelsOnly:
    """A net that answers with labels only: anything but ``predict`` fails the test."""

    def __init__(self, net):
        self._net = net
        self.dtype, self.input_shape, self.num_classes = net.dtype, net.input_shape, \
            net.num_classes
        self.calls = 0

    def predict(self, x, *, batch_size=256):
        self.calls += 1
        return self._net.predict(x, batch_size=batch_size)

    def __getattr__(self, name):
        raise AssertionError(f"the attack read {name!r}, not only the labels")


def sizes(adv, x, norm):
    d = (adv.astype(np.float64) - x).reshape(len(x), -1)
    return np.sqrt((d ** 2).sum(1)) if norm == "l2" else np.abs(d).max(1)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_unbounded_fools_everything_from_labels_alone(nets, norm):
    net, _ = nets
    x, y = bars(40, seed=1)
    oracle = LabelsOnly(net)
    adv, info = hop_skip_jump(oracle, x, y, norm=norm, n_queries=400, return_info=True)
    assert oracle.calls > 0
    np.testing.assert_array_equal(adv, hop_skip_jump(net, x, y, norm=norm, n_queries=400))
    assert (net.predict(adv) != y).all()
    assert info["success"].all()
    np.testing.assert_allclose(info["distance"], sizes(adv, x, norm), rtol=1e-12)
    assert adv.min() >= 0 and adv.max() <= 1
    assert (info["queries"] <= 400).all() and info["queries"].dtype == np.int64


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_the_perturbation_shrinks_as_the_queries_grow(nets, norm):
    net, _ = nets
    x, y = bars(30, seed=2)
    medians = [np.median(hop_skip_jump(net, x, y, norm=norm, n_queries=q,
                                       return_info=True)[1]["distance"])
               for q in (150, 600, 2400)]
    assert medians[0] > medians[1] > medians[2], medians


def test_close_to_carlini_wagner(nets):
    # A decision-based attack at 2,000 queries gets within a small factor of a white-box
    # minimal-norm attack (the paper's Fig. 4 shows HSJ approaching C&W on MNIST).
    net, _ = nets
    x, y = bars(20, seed=3)
    cw = sizes(carlini_wagner_l2(net, x, y, max_iter=100, binary_search_steps=5), x, "l2")
    _, info = hop_skip_jump(net, x, y, n_queries=2000, return_info=True)
    assert np.median(info["distance"]) <= 1.5 * np.median(cw)


def test_with_eps_only_the_examples_within_it_count(nets):
    net, _ = nets
    x, y = bars(40, seed=4)
    free = hop_skip_jump(net, x, y, n_queries=300, return_info=True)[1]["distance"]
    eps = float(np.median(free))
    adv, info = hop_skip_jump(net, x, y, eps, n_queries=300, return_info=True)
    ok = info["success"]
    assert 0 < ok.mean() < 1
    np.testing.assert_array_equal(adv[~ok], x[~ok])  # beyond eps: returned unchanged
    assert (net.predict(adv[ok]) != y[ok]).all()
    assert (sizes(adv[ok], x[ok], "l2") <= eps * (1 + 1e-6)).all()
    # An example stops once within eps: it spends no more queries than without the bound.
    assert (info["queries"] <= 300).all()
    assert info["queries"][ok].mean() < 300


def test_misclassified_inputs_cost_nothing_and_targets(nets):
    net, _ = nets
    x, y = bars(20, seed=5)
    y[:3] = (net.predict(x[:3]) + 1) % 3
    adv, info = hop_skip_jump(net, x, y, n_queries=200, return_info=True)
    np.testing.assert_array_equal(adv[:3], x[:3])
    np.testing.assert_array_equal(info["queries"][:3], 0)
    np.testing.assert_array_equal(info["distance"][:3], 0.0)
    target = (net.predict(x) + 2) % 3
    adv, info = hop_skip_jump(net, x, target, targeted=True, n_queries=300, return_info=True)
    assert (net.predict(adv)[info["success"]] == target[info["success"]]).all()
    assert info["success"].mean() > 0.9


def test_deterministic_eps_zero_and_arguments(nets):
    net, _ = nets
    x, y = bars(6, seed=6)
    a = hop_skip_jump(net, x, y, n_queries=150, seed=1)
    np.testing.assert_array_equal(a, hop_skip_jump(net, x, y, n_queries=150, seed=1))
    assert not np.array_equal(a, hop_skip_jump(net, x, y, n_queries=150, seed=2))
    out, info = hop_skip_jump(net, x, y, 0.0, return_info=True)
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(info["queries"], 0)
    for kwargs, match in [(dict(norm="l1"), "norm"), (dict(n_queries=0), "n_queries"),
                          (dict(steps=0), "steps"), (dict(gamma=0), "gamma"),
                          (dict(clip=None), "valid range"), (dict(init_tries=0), "init_tries")]:
        with pytest.raises(ValueError, match=f"^hop_skip_jump: .*{match}"):
            hop_skip_jump(net, x, y, **kwargs)
