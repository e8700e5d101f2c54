"""Property tests: the bounded attacks stay in the eps-ball and the valid range, whatever the
model, data, eps and seed (float32, where rounding is largest)."""

import numpy as np
import pytest
from attack_nets import make_convnet, make_linear_net
from hypothesis import given, settings
from hypothesis import strategies as st

from robustcnn.attacks import (ATTACKS, apgd, apgd_t, autoattack, bim, fgm, illc, pgd,
                               random_noise, spsa, square)

# (attack, norm, extra arguments); few steps keep the examples fast.
BOUNDED = [
    (fgm, "linf", {"norm": "linf"}),
    (fgm, "l2", {"norm": "l2"}),
    (bim, "linf", {"steps": 3}),
    (bim, "linf", {"alpha": 0.3, "steps": 2}),  # α > eps: the projection does the work
    (illc, "linf", {"steps": 3}),
    (pgd, "linf", {"steps": 3, "restarts": 2}),
    (pgd, "l2", {"norm": "l2", "steps": 3, "restarts": 2}),
    (random_noise, "linf", {"norm": "linf"}),
    (random_noise, "l2", {"norm": "l2"}),
    (square, "linf", {"norm": "linf", "n_queries": 15}),
    (square, "l2", {"norm": "l2", "n_queries": 15}),
    (spsa, "linf", {"steps": 3, "samples": 4, "learning_rate": 0.1}),
    (apgd, "linf", {"n_iter": 4, "restarts": 2}),
    (apgd, "l2", {"norm": "l2", "loss": "dlr", "n_iter": 4}),
    (apgd_t, "linf", {"n_iter": 3, "n_targets": 2}),
    (apgd_t, "l2", {"norm": "l2", "n_iter": 3}),
    (autoattack, "linf", {"n_iter": 3, "n_queries": 10}),
    (autoattack, "l2", {"norm": "l2", "n_iter": 3, "n_queries": 10}),
]
# Attacks that choose their own targets (targeted=True is refused).
UNTARGETED = (illc, random_noise, apgd_t, autoattack)
IDS = [f"{a.__name__}-{n}-{i}" for i, (a, n, _) in enumerate(BOUNDED)]


def sizes(delta, norm):
    flat = delta.reshape(len(delta), -1).astype(np.float64)
    return np.abs(flat).max(1) if norm == "linf" else np.sqrt((flat ** 2).sum(1))


def check_bounded(attack, norm, kwargs, net, x, y, eps, clip, seed, targeted=False):
    adv = attack(net, x, y, eps, clip=clip, seed=seed, targeted=targeted, **kwargs)
    assert adv.shape == x.shape and adv.dtype == net.dtype
    assert np.isfinite(adv).all()
    size = sizes(adv - x.astype(net.dtype), norm)
    assert (size <= eps * (1 + 1e-5) + 1e-6).all(), f"size {size.max()} > eps {eps}"
    if clip is not None:
        assert adv.min() >= clip[0] and adv.max() <= clip[1]
    return adv


@pytest.mark.parametrize("attack, norm, kwargs", BOUNDED, ids=IDS)
@settings(max_examples=15, deadline=None)
@given(eps=st.one_of(st.just(0.0), st.floats(1e-4, 3.0)), seed=st.integers(0, 2**16),
       lo=st.sampled_from([0.0, -1.0]), targeted=st.booleans())
def test_linear_model_perturbations_stay_in_the_ball_and_the_range(attack, norm, kwargs, eps,
                                                                   seed, lo, targeted):
    rng = np.random.default_rng(seed)
    net = make_linear_net(rng.standard_normal((3, 6)) * 3, rng.standard_normal(3),
                          dtype=np.float32)
    x = rng.uniform(lo, 1.0, size=(5, 6)).astype(np.float32)
    x[0, :2] = (lo, 1.0)  # on the edges of the range
    y = rng.integers(0, 3, 5)
    if attack in UNTARGETED:
        targeted = False
    check_bounded(attack, norm, kwargs, net, x, y, eps, (lo, 1.0), seed, targeted)


@pytest.mark.parametrize("attack, norm, kwargs", BOUNDED, ids=IDS)
@settings(max_examples=5, deadline=None)
@given(eps=st.floats(1e-3, 2.0), seed=st.integers(0, 2**16))
def test_convnet_perturbations_stay_in_the_ball_and_the_range(attack, norm, kwargs, eps, seed):
    net = make_convnet(dtype=np.float32, seed=seed % 7)
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(4, 1, 8, 8)).astype(np.float32)
    check_bounded(attack, norm, kwargs, net, x, None, eps, (0.0, 1.0), seed)


@pytest.mark.parametrize("attack, norm, kwargs", BOUNDED, ids=IDS)
def test_without_clip_the_full_budget_is_used(attack, norm, kwargs):
    # No clipping and a non-zero gradient: the single-step attacks spend exactly eps.
    rng = np.random.default_rng(0)
    net = make_linear_net(rng.standard_normal((3, 6)), rng.standard_normal(3), dtype=np.float64)
    x = rng.uniform(0, 1, size=(5, 6))
    adv = check_bounded(attack, norm, kwargs, net, x, None, 0.25, None, 0)
    if attack in (fgm, random_noise):
        np.testing.assert_allclose(sizes(adv - x, norm), 0.25, rtol=1e-12)


def test_attacks_are_deterministic_given_the_seed():
    rng = np.random.default_rng(3)
    net = make_convnet(dtype=np.float32)
    x = rng.uniform(0, 1, size=(6, 1, 8, 8)).astype(np.float32)
    for name in ("pgd-linf", "pgd-l2", "noise-linf", "noise-l2"):
        a = ATTACKS[name](net, x, None, 0.2, seed=5, **({"steps": 3} if "pgd" in name else {}))
        b = ATTACKS[name](net, x, None, 0.2, seed=5, **({"steps": 3} if "pgd" in name else {}))
        c = ATTACKS[name](net, x, None, 0.2, seed=6, **({"steps": 3} if "pgd" in name else {}))
        np.testing.assert_array_equal(a, b)  # deliberate exact check: same seed, same result
        assert np.abs(a - c).max() > 1e-4, name
