"""attacks/norms.py: the shared norm hooks, against their definitions."""

import numpy as np
import pytest
from scipy import stats

from robustcnn.attacks.norms import (check_norm, l2_norms, normalize, perturbation_norms,
                                     project, random_start)


@pytest.mark.parametrize("spelling, canonical", [
    ("linf", "linf"), ("Linf", "linf"), ("inf", "linf"), (np.inf, "linf"), (float("inf"), "linf"),
    ("l2", "l2"), ("L2", "l2"), (2, "l2"), ("2", "l2"),
])
def test_norm_spellings(spelling, canonical):
    assert check_norm(spelling, "x") == canonical


@pytest.mark.parametrize("bad", ["l1", 1, 0, True, None, -np.inf, "l3"])
def test_bad_norms(bad):
    with pytest.raises(ValueError, match="^pgd: norm must be"):
        check_norm(bad, "pgd")


def test_normalize_linf_is_the_sign():
    g = np.array([[0.5, -2.0, 0.0], [1e-30, -1e-30, 3.0]])
    np.testing.assert_array_equal(normalize(g, "linf"), [[1, -1, 0], [1, -1, 1]])


def test_normalize_l2_has_unit_norm_and_the_gradient_direction(rng):
    g = rng.standard_normal((5, 2, 3, 3))
    g[1] *= 1e-30  # tiny float64 gradients must not underflow
    g[2] = 0.0
    u = normalize(g, "l2")
    lengths = np.sqrt((u.reshape(5, -1) ** 2).sum(1))
    np.testing.assert_allclose(lengths[[0, 1, 3, 4]], 1.0, rtol=1e-12)
    assert lengths[2] == 0  # exactly: a zero gradient gives no direction
    ref = g[0] / np.sqrt((g[0] ** 2).sum())
    np.testing.assert_allclose(u[0], ref, rtol=1e-12)


def test_normalize_l2_float32_small_gradients():
    g = np.full((1, 100), 1e-25, dtype=np.float32)  # squares underflow in float32
    u = normalize(g, "l2")
    assert u.dtype == np.float32
    np.testing.assert_allclose(u, 0.1, rtol=1e-6)


def test_project(rng):
    d = rng.standard_normal((4, 10)) * np.array([[0.01], [1], [3], [10]])
    np.testing.assert_allclose(project(d, 0.5, "linf"), np.clip(d, -0.5, 0.5), rtol=0, atol=0)
    p = project(d, 0.5, "l2")
    lengths = np.linalg.norm(d, axis=1)
    for n in range(4):
        expected = d[n] if lengths[n] <= 0.5 else d[n] * 0.5 / lengths[n]
        np.testing.assert_allclose(p[n], expected, rtol=1e-12)


def test_l2_norms_no_overflow():
    a = np.array([[1e200, 1e200], [3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_norms(a), [np.sqrt(2) * 1e200, 5.0, 0.0], rtol=1e-12)


def test_random_start_linf_is_uniform_in_the_box():
    rng = np.random.default_rng(0)
    s = random_start(rng, (2000, 5), 0.3, "linf")
    assert np.abs(s).max() <= 0.3
    p = stats.kstest(s.reshape(-1), stats.uniform(loc=-0.3, scale=0.6).cdf).pvalue
    assert p > 1e-3


@pytest.mark.parametrize("d", [1, 3, 50])
def test_random_start_l2_is_uniform_in_the_ball(d):
    # Uniform in the ball ⇔ a uniform direction and P(radius ≤ r) = (r / eps)^d.
    rng = np.random.default_rng(1)
    eps = 2.0
    s = random_start(rng, (4000, d), eps, "l2")
    radius = np.linalg.norm(s, axis=1)
    assert radius.max() <= eps * (1 + 1e-12)
    assert stats.kstest((radius / eps) ** d, "uniform").pvalue > 1e-3
    if d > 1:  # the direction: every coordinate of the unit vector has mean 0 and variance 1/d
        unit = s / radius[:, None]
        assert np.abs(unit.mean(0)).max() < 5 / np.sqrt(4000)
        np.testing.assert_allclose((unit ** 2).mean(0), 1 / d, rtol=0.15)


def test_random_start_is_reproducible_and_typed():
    a = random_start(np.random.default_rng(7), (3, 4), 0.1, "l2", dtype=np.float32)
    b = random_start(np.random.default_rng(7), (3, 4), 0.1, "l2", dtype=np.float32)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)  # deliberate exact check: same seed, same numbers


def test_perturbation_norms():
    x = np.zeros((2, 1, 2, 2))
    adv = x.copy()
    adv[0, 0, 0, 0] = 0.3
    adv[0, 0, 1, 1] = -0.4
    adv[1, 0, 0, 1] = 1e-8  # below L0_TOL: not a change
    n = perturbation_norms(x, adv)
    np.testing.assert_allclose(n["l0"], [2, 0])
    np.testing.assert_allclose(n["l2"], [0.5, 1e-8], rtol=1e-12)
    np.testing.assert_allclose(n["linf"], [0.4, 1e-8], rtol=1e-12)
