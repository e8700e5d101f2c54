"""FAB's projection onto the intersection of a hyperplane and the box, against
scipy.optimize.linprog (L∞, a linear program) and SLSQP (L2, a quadratic program) on random
instances, and its closed forms."""

import numpy as np
import pytest
from scipy.optimize import linprog, minimize

from robustcnn.attacks.hyperplane import project_hyperplane_box


def instances(rng, count, lo=0.0, hi=1.0):
    """Random points in the box with hyperplanes through a random box point (so the box meets
    them); some weights zero."""
    for i in range(count):
        d = int(rng.integers(1, 15))
        t = rng.uniform(lo, hi, d)
        w = rng.normal(size=d)
        if i % 3 == 0:
            w[rng.uniform(size=d) < 0.3] = 0.0
        b = float(w @ rng.uniform(lo, hi, d))
        yield t, w, b


def linf_by_linprog(t, w, b, lo, hi):
    """min s subject to −s ≤ dᵢ ≤ s, ⟨w, d⟩ = b − ⟨w, t⟩, lo ≤ t + d ≤ hi."""
    d = len(t)
    eye, ones = np.eye(d), np.ones((d, 1))
    res = linprog(np.r_[np.zeros(d), 1.0], A_ub=np.block([[eye, -ones], [-eye, -ones]]),
                  b_ub=np.zeros(2 * d), A_eq=np.r_[w, 0.0][None], b_eq=[b - w @ t],
                  bounds=[(lo - v, hi - v) for v in t] + [(0, None)], method="highs")
    assert res.status == 0
    return res.x[-1]


def l2_by_slsqp(t, w, b, lo, hi):
    if len(t) == 1:  # the constraint alone fixes d (SLSQP reports a singular subproblem)
        return abs(b - w[0] * t[0]) / abs(w[0]) if w[0] else 0.0
    res = minimize(lambda v: 0.5 * v @ v, np.zeros(len(t)), jac=lambda v: v, method="SLSQP",
                   constraints=[{"type": "eq", "fun": lambda v: w @ v - (b - w @ t),
                                 "jac": lambda v: w}],
                   bounds=[(lo - v, hi - v) for v in t], options=dict(ftol=1e-15, maxiter=1000))
    assert res.success
    return np.linalg.norm(res.x)


@pytest.mark.parametrize("box", [(0.0, 1.0), (-1.0, 2.0)])
def test_linf_projection_matches_linprog(rng, box):
    for t, w, b in instances(rng, 150, *box):
        d = project_hyperplane_box(t[None], w[None], np.array([b]), "linf", box)[0]
        assert abs(w @ (t + d) - b) <= 1e-9 * max(1.0, np.abs(w).sum())
        assert (t + d).min() >= box[0] - 1e-12 and (t + d).max() <= box[1] + 1e-12
        assert np.abs(d).max() == pytest.approx(linf_by_linprog(t, w, b, *box), abs=1e-9)


def test_l2_projection_matches_a_quadratic_program(rng):
    for t, w, b in instances(rng, 150):
        d = project_hyperplane_box(t[None], w[None], np.array([b]), "l2", (0.0, 1.0))[0]
        assert abs(w @ (t + d) - b) <= 1e-9 * max(1.0, np.abs(w).sum())
        assert (t + d).min() >= -1e-12 and (t + d).max() <= 1 + 1e-12
        assert np.linalg.norm(d) == pytest.approx(l2_by_slsqp(t, w, b, 0.0, 1.0), abs=1e-6)
        assert np.all(d[w == 0] == 0)


def test_rows_are_independent_and_match_one_at_a_time(rng):
    rows = list(instances(rng, 20))
    width = max(len(t) for t, _, _ in rows)
    # Pad every row to one width with w = 0 coordinates, which never move.
    t = np.array([np.r_[r[0], np.full(width - len(r[0]), 0.5)] for r in rows])
    w = np.array([np.r_[r[1], np.zeros(width - len(r[1]))] for r in rows])
    b = np.array([r[2] for r in rows])
    for norm in ("linf", "l2"):
        together = project_hyperplane_box(t, w, b, norm, (0.0, 1.0))
        for i, (ti, wi, bi) in enumerate(rows):
            alone = project_hyperplane_box(ti[None], wi[None], np.array([bi]), norm, (0.0, 1.0))
            np.testing.assert_allclose(together[i, :len(ti)], alone[0], rtol=0, atol=1e-12)
            assert np.all(together[i, len(ti):] == 0)


def test_without_a_box_the_closed_forms(rng):
    t, w = rng.normal(size=(6, 9)), rng.normal(size=(6, 9))
    b = rng.normal(size=6)
    c = (w * t).sum(1) - b
    d = project_hyperplane_box(t, w, b, "l2", None)
    np.testing.assert_allclose(d, -c[:, None] * w / (w ** 2).sum(1, keepdims=True), atol=1e-12)
    d = project_hyperplane_box(t, w, b, "linf", None)
    np.testing.assert_allclose(d, -c[:, None] * np.sign(w) / np.abs(w).sum(1, keepdims=True),
                               atol=1e-12)


def test_out_of_reach_gives_the_corner_towards_the_hyperplane():
    t = np.array([[0.5, 0.5, 0.5]])
    w = np.array([[1.0, -2.0, 0.0]])
    for norm in ("linf", "l2"):
        d = project_hyperplane_box(t, w, np.array([10.0]), norm, (0.0, 1.0))  # needs ⟨w,z⟩ = 10
        np.testing.assert_allclose(d, [[0.5, -0.5, 0.0]])  # z = (1, 0, ·): ⟨w, z⟩ = 1, the max
        d = project_hyperplane_box(t, w, np.array([w[0] @ t[0]]), norm, (0.0, 1.0))
        np.testing.assert_array_equal(d, 0.0)  # already on it


def test_bad_shapes_and_norm():
    with pytest.raises(ValueError, match="project_hyperplane_box: points and w"):
        project_hyperplane_box(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros(2), "l2", None)
    with pytest.raises(ValueError, match="norm"):
        project_hyperplane_box(np.zeros((1, 3)), np.ones((1, 3)), np.zeros(1), "l1", None)
