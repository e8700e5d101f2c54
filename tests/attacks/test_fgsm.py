"""FGSM against a hand-computed reference, and its argument checks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robustcnn.attacks import fgsm, robustness_table
from robustcnn.engine import Linear, Net


def linear_net(weight, bias, dtype=np.float64):
    net = Net([Linear("ip", weight.shape[0])], input_shape=(weight.shape[1],), dtype=dtype)
    net.params["ip"]["weight"][...] = weight
    net.params["ip"]["bias"][...] = bias
    return net


def test_fgsm_matches_the_hand_computed_step():
    # Logits z = W x + b. For softmax cross-entropy, dL/dx = Wᵀ (softmax(z) − onehot(y)).
    W = np.array([[1.0, -2.0, 0.5], [-1.0, 1.0, 2.0]])
    b = np.array([0.1, -0.2])
    net = linear_net(W, b)
    x = np.array([[0.5, 0.5, 0.5], [0.2, 0.9, 0.0]])
    y = np.array([0, 1])
    z = x @ W.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(2)[y]) @ W
    expected = np.clip(x + 0.1 * np.sign(grad), 0, 1)
    np.testing.assert_allclose(fgsm(net, x, y, 0.1), expected, rtol=0, atol=1e-12)
    # Targeted: move down the loss of the target.
    t = np.array([1, 0])
    grad_t = (p - np.eye(2)[t]) @ W
    np.testing.assert_allclose(fgsm(net, x, t, 0.1, targeted=True),
                               np.clip(x - 0.1 * np.sign(grad_t), 0, 1), rtol=0, atol=1e-12)
    # No clipping: the step may leave [0, 1].
    np.testing.assert_allclose(fgsm(net, x, y, 0.7, clip=None), x + 0.7 * np.sign(grad),
                               rtol=0, atol=1e-12)


def test_fgsm_default_labels_are_the_predictions():
    W = np.array([[2.0, 0.0], [0.0, 2.0]])
    net = linear_net(W, np.zeros(2))
    x = np.array([[0.9, 0.1], [0.2, 0.7]])
    np.testing.assert_allclose(fgsm(net, x, None, 0.05), fgsm(net, x, net.predict(x), 0.05))


@settings(max_examples=30, deadline=None)
@given(eps=st.floats(0, 2), seed=st.integers(0, 2**16))
def test_perturbation_stays_in_the_eps_ball_and_the_valid_range(eps, seed):
    rng = np.random.default_rng(seed)
    net = linear_net(rng.standard_normal((3, 5)), rng.standard_normal(3), dtype=np.float32)
    x = rng.uniform(0, 1, size=(7, 5)).astype(np.float32)
    adv = fgsm(net, x, rng.integers(0, 3, 7), eps)
    assert adv.dtype == np.float32 and adv.shape == x.shape
    assert np.abs(adv - x).max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1


def test_eps_zero_returns_the_input():
    net = linear_net(np.eye(2), np.zeros(2))
    x = np.array([[0.3, 0.6]])
    out = fgsm(net, x, [0], 0.0)
    np.testing.assert_array_equal(out, x)
    assert out is not x


def test_fgsm_lowers_accuracy_on_a_trained_linear_model():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(200, 2))
    y = (x[:, 1] > x[:, 0]).astype(int)  # class 1 where the second coordinate wins
    net = linear_net(np.array([[5.0, -5.0], [-5.0, 5.0]]), np.zeros(2))
    rows = robustness_table(net, x, y, [0.0, 0.1, 0.5], attack=fgsm)
    acc = [r["adversarial_accuracy"] for r in rows]
    assert acc[0] == pytest.approx(1.0)
    assert acc[0] > acc[1] > acc[2]
    assert rows[2]["linf_mean"] <= 0.5 + 1e-12


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=-0.1), "eps"),
    (dict(eps=float("nan")), "eps"),
    (dict(eps=0.1, clip=(1, 0)), "clip"),
    (dict(eps=0.1, clip=(0.5, 1.0)), "outside clip"),
    (dict(eps=0.1, batch_size=0), "batch_size"),
])
def test_bad_arguments(kwargs, match):
    net = linear_net(np.eye(2), np.zeros(2))
    with pytest.raises(ValueError, match=match):
        fgsm(net, np.array([[0.3, 0.6]]), [0], **kwargs)


def test_bad_labels():
    net = linear_net(np.eye(2), np.zeros(2))
    with pytest.raises(ValueError, match="labels"):
        fgsm(net, np.array([[0.3, 0.6]]), [0, 1], 0.1)


def test_targeted_fgsm_with_enough_eps_reaches_the_target():
    # Binary linear model: one signed step of length eps moves the logit margin by
    # eps · ‖w₁ − w₀‖₁, so eps > |margin| / ‖w₁ − w₀‖₁ crosses the boundary (no clipping).
    W = np.array([[1.0, -2.0, 0.5], [-1.0, 1.0, 2.0]])
    net = linear_net(W, np.zeros(2))
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (20, 3))
    t = 1 - net.predict(x)
    margin = np.abs(x @ (W[1] - W[0]))
    need = margin / np.abs(W[1] - W[0]).sum()
    adv = fgsm(net, x, t, float(need.max()) * 1.01, targeted=True, clip=None)
    assert (net.predict(adv) == t).all()
    # Just short of the need, the example that needs most is not moved far enough.
    worst = int(np.argmax(need))
    short = fgsm(net, x, t, float(need[worst]) * 0.99, targeted=True, clip=None)
    assert net.predict(short)[worst] != t[worst]
