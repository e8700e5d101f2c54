"""APGD and APGD-T: the checkpoints and the step-size rule against the paper's definitions, the
loop on NumPy objectives whose behaviour is known, the ball and the box, targets, restarts."""

import numpy as np
import pytest
from attack_nets import bars, make_linear_net, trained_bars_nets

from robustcnn.attacks import pgd
from robustcnn.attacks.apgd import (apgd, apgd_run, apgd_start, apgd_t, checkpoints, halve_step,
                                    target_classes)
from robustcnn.attacks.norms import l2_norms


@pytest.fixture(scope="module")
def bars_net():
    return trained_bars_nets()[0]


def paper_checkpoints(n_iter):
    """p₀ = 0, p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06); w_j = round(p_j · n)."""
    p = [0.0, 0.22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if nxt > 1 + 1e-9:
            break
        p.append(nxt)
    return [int(round(v * n_iter)) for v in p[1:]]


@pytest.mark.parametrize("n_iter", [100, 1000])
def test_checkpoints_are_the_papers(n_iter):
    assert checkpoints(n_iter) == paper_checkpoints(n_iter)


def test_checkpoints_of_few_iterations_follow_the_codes_whole_intervals():
    assert checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]  # ⌊2.2⌋, then intervals of 1
    assert checkpoints(1) == [1]
    assert checkpoints(50) == [11, 21, 30, 38, 45]  # intervals 11, 10, 9, 8, 7 (⌊1.5⌋ = 1)


def test_halve_step_conditions():
    k = 8  # rho · k = 6
    rising = np.arange(k + 1, dtype=float)                  # 8 rises of 8
    flat = np.zeros(k + 1)                                  # no rise
    six = np.array([0, 1, 2, 3, 4, 5, 6, 5, 4], float)      # 6 rises: ≤ 6, condition 1
    seven = np.array([0, 1, 2, 3, 4, 5, 6, 7, 6], float)    # 7 rises
    window = np.stack([rising, flat, six, seven], axis=1)
    no = np.zeros(4, dtype=bool)
    improved = (np.zeros(4), np.ones(4))
    np.testing.assert_array_equal(halve_step(window, 0.75, no, *improved),
                                  [False, True, True, False])
    # Condition 2: not halved last time and the best did not improve → halve, even when rising.
    same = (np.ones(4), np.ones(4))
    np.testing.assert_array_equal(halve_step(window, 0.75, no, *same), [True] * 4)
    # ... but not if the step was halved at the last checkpoint.
    np.testing.assert_array_equal(halve_step(window, 0.75, ~no, *same),
                                  [False, True, True, False])


def run(objective, x, start, n_iter=100, eps=1.0, norm="linf", bounds=None):
    return apgd_run(objective, x, start, eps=eps, norm=norm, n_iter=n_iter, bounds=bounds)


def never_fooled(values):
    return np.zeros(len(values), dtype=bool)


def test_the_step_keeps_its_size_while_the_loss_rises():
    # A loss that rises at every iteration (whatever the iterate): no checkpoint halves it.
    calls = []

    def rising(x, rows):
        calls.append(1)
        return np.full(len(x), float(len(calls))), np.ones_like(x), never_fooled(x)

    x = np.zeros((3, 4))
    res = run(rising, x, x.copy())
    np.testing.assert_array_equal(res["steps"], 2.0)


def test_a_flat_loss_halves_the_step_at_every_checkpoint():
    def flat(x, rows):
        return np.zeros(len(x)), np.ones_like(x), never_fooled(x)

    x = np.zeros((2, 3))
    res = run(flat, x, x.copy())
    marks = checkpoints(100)
    for i in range(101):
        halvings = sum(1 for w in marks if w <= i)
        np.testing.assert_array_equal(res["steps"][i], 2.0 / 2 ** halvings)


def test_the_step_rule_on_a_quadratic():
    # f(x) = −(x − c)² in one dimension, the maximiser c inside the L∞ ball of radius 1 around 0,
    # started on the ball's surface: the first steps of 2 overshoot c and the iterates
    # oscillate, so the loss rises in about half the steps and condition 1 halves the step at
    # the checkpoints; the best iterate converges to c.
    c = np.array([0.3, -0.55, 0.05, 0.71])

    def quadratic(x, rows):
        return -((x[:, 0] - c[rows]) ** 2), -2 * (x - c[rows][:, None]), never_fooled(x)

    x = np.zeros((4, 1))
    start = np.array([[-1.0], [1.0], [1.0], [-1.0]])
    res = run(quadratic, x, start)
    steps, marks = res["steps"], checkpoints(100)
    # The step changes only at checkpoints, and then by halving.
    for i in range(1, 101):
        ratio = steps[i] / steps[i - 1]
        if i in marks:
            assert np.all((ratio == 1.0) | (ratio == 0.5)), (i, ratio)
        else:
            np.testing.assert_array_equal(ratio, 1.0)
    assert np.all(steps[marks[0]] == 1.0)        # the oscillation halved it at w₁ = 22
    assert np.all(steps[-1] <= 2.0 / 2 ** 5)      # and kept halving it
    np.testing.assert_allclose(res["x_best"][:, 0], c, atol=4 * steps[-1].max())


def test_the_first_iterates_match_the_hand_computed_ones():
    # A linear loss with a fixed gradient, L∞, radius 1, no box: x1 = P(x0 + 2 sign g),
    # x2 = P(x1 + 0.75 (z2 − x1) + 0.25 (x1 − x0)) with z2 = P(x1 + 2 sign g).
    g = np.array([[1.0, -2.0, 0.5]])
    seen = []

    def linear(x, rows):
        seen.append(x.copy())
        return (x * g).sum(axis=1), np.repeat(g, len(x), axis=0), never_fooled(x)

    x, start = np.zeros((1, 3)), np.array([[0.5, 0.5, -0.9]])
    run(linear, x, start, n_iter=2)
    x1 = np.clip(start + 2 * np.sign(g), -1, 1)
    z2 = np.clip(x1 + 2 * np.sign(g), -1, 1)
    x2 = np.clip(x1 + 0.75 * (z2 - x1) + 0.25 * (x1 - start), -1, 1)
    np.testing.assert_allclose(seen[1], x1)
    np.testing.assert_allclose(seen[2], x2)


def test_an_example_stops_once_fooled():
    calls = []

    def objective(x, rows):
        calls.append(rows.copy())
        return x.sum(axis=1), np.ones_like(x), rows == 0  # example 0 is fooled from the start

    run(objective, np.zeros((3, 2)), np.zeros((3, 2)), n_iter=5)
    assert all(0 not in rows for rows in calls[1:]) and len(calls) == 6


@pytest.mark.parametrize("norm, eps", [("linf", 0.15), ("l2", 0.8)])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_stays_in_the_ball_and_the_box_and_is_deterministic(bars_net, norm, eps, loss):
    x, y = bars(48, seed=3)
    adv, info = apgd(bars_net, x, y, eps, norm=norm, loss=loss, n_iter=20, restarts=2,
                     return_info=True)
    size = np.abs(adv - x).reshape(len(x), -1).max(1) if norm == "linf" else l2_norms(adv - x)
    assert size.max() <= eps * (1 + 1e-6)
    assert adv.min() >= 0 and adv.max() <= 1 and adv.dtype == np.float32
    np.testing.assert_array_equal(info["fooled"], bars_net.predict(adv) != y)
    np.testing.assert_array_equal(adv, apgd(bars_net, x, y, eps, norm=norm, loss=loss,
                                            n_iter=20, restarts=2))
    # Batch-size independent: every example's start and trajectory are its own.
    small = apgd(bars_net, x, y, eps, norm=norm, loss=loss, n_iter=20, restarts=2, batch_size=7)
    np.testing.assert_allclose(small, adv, rtol=0, atol=1e-6)


def test_apgd_is_at_least_as_strong_as_pgd(bars_net):
    x, y = bars(200, seed=7)
    for eps in (0.15, 0.2):
        strong = bars_net.accuracy(apgd(bars_net, x, y, eps), y)
        weak = bars_net.accuracy(pgd(bars_net, x, y, eps, steps=40), y)
        assert strong <= weak + 0.01, (eps, strong, weak)
        assert strong < bars_net.accuracy(x, y)


def test_restarts_only_attack_what_is_still_robust(bars_net):
    x, y = bars(64, seed=4)
    one, info1 = apgd(bars_net, x, y, 0.15, n_iter=10, return_info=True)
    three, info3 = apgd(bars_net, x, y, 0.15, n_iter=10, restarts=3, return_info=True)
    # The first restart is the same run: what it fooled stays fooled, with the same iterate.
    assert np.all(info3["fooled"][info1["fooled"]])
    np.testing.assert_array_equal(three[info1["fooled"]], one[info1["fooled"]])
    assert info3["fooled"].sum() >= info1["fooled"].sum()


def test_random_starts_lie_on_the_surface_of_the_ball(rng):
    x = rng.uniform(0.2, 0.8, (5, 1, 4, 4))
    s = apgd_start(x, 0.1, "linf", [0, 1], None)
    np.testing.assert_allclose(np.abs(s - x).reshape(5, -1).max(1), 0.1)
    s = apgd_start(x, 0.5, "l2", [0, 1], None)
    np.testing.assert_allclose(l2_norms(s - x), 0.5, rtol=1e-12)
    np.testing.assert_array_equal(apgd_start(x, 0.5, "l2", [0, 1], None), s)
    assert not np.allclose(apgd_start(x, 0.5, "l2", [0, 2], None), s)


def linear_problem():
    # Three classes on the plane; every class reachable within the box.
    net = make_linear_net(np.array([[4.0, 0.0], [0.0, 4.0], [-2.0, -2.0]]), np.array([0, 0, 2.0]))
    x = np.array([[0.5, 0.1], [0.1, 0.5], [0.05, 0.05], [0.3, 0.2]])
    return net, x


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_targeted_apgd_reaches_the_targets(loss):
    net, x = linear_problem()
    pred = net.predict(x)
    targets = (pred + 1) % 3
    adv = apgd(net, x, targets, 0.6, loss=loss, targeted=True, n_iter=30)
    np.testing.assert_array_equal(net.predict(adv), targets)
    assert np.abs(adv - x).max() <= 0.6 + 1e-12


def test_apgd_t_targets_the_runners_up_and_changes_the_label():
    net, x = linear_problem()
    logits = net.logits(x)
    y = logits.argmax(1)
    t = target_classes(logits, y, 5)
    assert t.shape == (4, 2)                   # capped at K − 1 = 2
    assert np.all(t != y[:, None])
    z = logits.copy()
    z[np.arange(4), y] = -np.inf
    np.testing.assert_array_equal(t[:, 0], z.argmax(1))
    adv, info = apgd_t(net, x, y, 0.6, n_iter=30, return_info=True)
    assert np.all(net.predict(adv) != y) and np.all(info["fooled"])


def test_examples_already_fooled_are_returned_unchanged(bars_net):
    x, y = bars(20, seed=9)
    wrong = (y + 1) % 3
    for attack in (apgd, apgd_t):
        np.testing.assert_array_equal(attack(bars_net, x, wrong, 0.3, n_iter=5), x)


def test_zero_gradients_at_the_start_are_reported():
    from robustcnn.engine import Linear, Net
    net = Net([Linear("ip", 3)], input_shape=(2,), dtype=np.float64)
    net.params["ip"]["weight"][...] = 0.0
    net.params["ip"]["bias"][...] = [1.0, 0.0, 0.0]
    x = np.full((4, 2), 0.5)
    _, info = apgd(net, x, None, 0.1, n_iter=3, return_info=True)
    assert info["zero_grad_start"].all() and not info["fooled"].any()


@pytest.mark.parametrize("kwargs, match", [
    (dict(loss="mse"), "loss must be one of"), (dict(n_iter=0), "n_iter"),
    (dict(restarts=0), "restarts"), (dict(rho=0), "rho"), (dict(rho=1.5), "rho"),
    (dict(norm="l1"), "norm")])
def test_bad_arguments(kwargs, match):
    net, x = linear_problem()
    with pytest.raises(ValueError, match=f"^apgd: .*{match}"):
        apgd(net, x, None, 0.1, **kwargs)


def test_bad_arguments_of_apgd_t_and_dlr_with_two_classes():
    net, x = linear_problem()
    with pytest.raises(ValueError, match="^apgd_t: targeted=True"):
        apgd_t(net, x, None, 0.1, targeted=True)
    with pytest.raises(ValueError, match="^apgd_t: n_targets"):
        apgd_t(net, x, None, 0.1, n_targets=0)
    two = make_linear_net(np.eye(2), np.zeros(2))
    with pytest.raises(ValueError, match="^apgd: the DLR loss needs at least 3 classes"):
        apgd(two, x, None, 0.1, loss="dlr")
    with pytest.raises(ValueError, match="^apgd_t: the targeted DLR loss needs at least 3"):
        apgd_t(two, x, None, 0.1)
