"""Dynamic Network Surgery (compress/dns.py): the thresholds, the mask update rule and the
update probability, and whole surgery steps against a NumPy reference step."""

import numpy as np
import pytest

from robustcnn.compress.dns import (DNSObjective, dns_mask_update, dns_thresholds,
                                    update_probability)
from robustcnn.engine import Linear, Net
from robustcnn.engine.train import SGD


def reference_dns_step(w, b, mask, x, y, lr, a, bt, update):
    """One DNS iteration written out in NumPy float64: mask update (eq. 5), loss on W ⊙ T,
    every weight updated by ∂L/∂(W ⊙ T) (plain SGD)."""
    mask = mask.copy()
    if update:
        mask[(mask == 1) & (np.abs(w) <= a)] = 0
        mask[(mask == 0) & (np.abs(w) > bt)] = 1
    z = x @ (w * mask).T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    g = p / len(y)
    return w - lr * g.T @ x, b - lr * g.sum(0), mask


def test_dns_step_matches_a_numpy_reference_step():
    rng = np.random.default_rng(0)
    net = Net([Linear("ip", 4)], input_shape=(6,), dtype=np.float64)
    w0 = rng.normal(0, 1, (4, 6))
    net.params["ip"]["weight"][...] = w0
    x, y = rng.normal(size=(8, 6)), rng.integers(0, 4, 8)
    mask = np.abs(w0) > 0.5
    mask[0, np.argmax(np.abs(w0[0]))] = False  # a pruned large weight: spliced back
    a, bt = dns_thresholds(w0, 0.0)
    assert (a, bt) == pytest.approx((0.9 * np.abs(w0).mean(), 1.1 * np.abs(w0).mean()))
    masks = {"ip": mask.copy()}
    surgery = DNSObjective({"ip": (a, bt)}, masks, gamma=0.0)  # σ(t) = 1: update every step
    opt = SGD(momentum=0.0, weight_decay=0.0)
    w, b, ref_mask = w0.copy(), np.zeros(4), mask.copy()
    for _ in range(3):
        surgery(net, x, y)
        opt.step(net, 0.5)
        w, b, ref_mask = reference_dns_step(w, b, ref_mask, x, y, 0.5, a, bt, True)
        np.testing.assert_array_equal(masks["ip"], ref_mask)
        np.testing.assert_allclose(net.params["ip"]["weight"], w, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(net.params["ip"]["bias"], b, rtol=1e-12, atol=1e-14)
    assert ref_mask[0, np.argmax(np.abs(w0[0]))]  # spliced
    assert not ref_mask.all() and surgery.updates == 3


def test_dns_update_rule_and_schedule():
    w = np.array([0.1, 0.5, 1.0, 2.0])
    mask = np.array([True, True, False, False])
    dns_mask_update(w, mask, 0.4, 1.5)
    np.testing.assert_array_equal(mask, [False, True, False, True])
    assert update_probability(0, 1e-4, 1) == 1.0
    assert update_probability(10_000, 1e-4, 1) == pytest.approx(0.5)
    assert update_probability(30_000, 1e-4, 2) == pytest.approx(1 / 16)
