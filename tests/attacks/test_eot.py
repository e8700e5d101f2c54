"""attacks/eot.py: Expectation over Transformation (Athalye et al. 2018). The averaged gradient
of a dropout net is the exact gradient of the averaged logits, is closer to the expectation
than one sample, leaves batch norms alone, and any attack runs through the wrapper."""

import numpy as np
import pytest

from robustcnn.attacks import pgd
from robustcnn.attacks.eot import eot
from robustcnn.engine import Conv2d, Linear, MaxPool2d, Net, ReLU
from robustcnn.engine.layers import BatchNorm, Dropout


def dropout_net(dtype=np.float64, p=0.5, batch_norm=False):
    layers = [Conv2d("conv1", 4, kernel=3)]
    if batch_norm:
        layers.append(BatchNorm("bn1"))
    layers += [ReLU("relu1"), MaxPool2d("pool1", 2, 2), Linear("ip1", 32), ReLU("relu2"),
               Dropout("drop", p=p), Linear("ip2", 3)]
    net = Net(layers, input_shape=(1, 8, 8), dtype=dtype, seed=3)
    rng = np.random.default_rng(7)
    for params in net.params.values():
        if "bias" in params:
            params["bias"][...] = rng.normal(0.0, 0.1, params["bias"].shape)
    return net


COEFFS = np.array([1.0, -1.0, 0.5])  # a loss linear in the logits: c · z


def expected_gradient(net, x, passes=4000, seed=11):
    """E over dropout masks of ∇ₓ (c · z), by averaging many passes of the plain Net API."""
    net.seed_dropout(seed)
    dz = np.tile(COEFFS, (len(x), 1))
    total = np.zeros(x.shape)
    for _ in range(passes):
        net.forward_for_backward(x, train=True)
        total += net.backward(dz, param_grads=False, input_grad=True, of="logits")
    return total / passes


def eot_gradient(net, x, samples, seed):
    wrapped = eot(net, samples, seed=seed)
    wrapped.forward_for_backward(x)
    return wrapped.backward(np.tile(COEFFS, (len(x), 1)), of="logits")


def test_averaged_gradient_is_closer_to_the_expectation_than_one_sample():
    net = dropout_net()
    x = np.random.default_rng(0).uniform(0, 1, (8, 1, 8, 8))
    ref = expected_gradient(net, x)
    err = {k: np.mean([np.linalg.norm(eot_gradient(net, x, k, seed) - ref)
                       for seed in range(10)]) for k in (1, 20)}
    # Averaging k independent samples divides the error's s.d. by √k (≈ 4.5 for k = 20).
    assert err[20] < 0.4 * err[1], err


def test_the_gradient_is_exactly_that_of_the_averaged_logits():
    # With its draws fixed (a fresh wrapper of the same seed), the EOT net is a function of x;
    # central differences of c · z̄ must match its backward.
    net = dropout_net()
    x = np.random.default_rng(1).uniform(0, 1, (2, 1, 8, 8))

    def f(xx):
        return (eot(net, 5, seed=3).forward_for_backward(xx)[1] * COEFFS).sum()

    grad = eot_gradient(net, x, 5, seed=3)
    rng = np.random.default_rng(2)
    for _ in range(12):
        i = tuple(rng.integers(0, s) for s in x.shape)
        e = np.zeros_like(x)
        e[i] = 1e-6
        fd = (f(x + e) - f(x - e)) / 2e-6
        assert fd == pytest.approx(grad[i], rel=1e-5, abs=1e-9)


def test_logits_average_random_passes_and_differ_from_eval_mode():
    net = dropout_net()
    x = np.random.default_rng(3).uniform(0, 1, (5, 1, 8, 8))
    wrapped = eot(net, 200, seed=0)
    a, b = wrapped.logits(x), wrapped.logits(x)
    assert not np.allclose(a, b, rtol=0, atol=1e-12)  # fresh draws at each call
    one = eot(net, 1, seed=0)
    spread_one = np.std([one.logits(x) for _ in range(40)], axis=0).mean()
    assert np.abs(a - b).mean() < 0.3 * spread_one  # averages of 200 passes vary less
    assert wrapped.predict(x).shape == (5,)


def test_batch_norms_use_and_keep_their_running_statistics():
    net = dropout_net(batch_norm=True)
    bn = net.layer("bn1")
    bn.buffers["mean"][...] = 0.3
    bn.buffers["var"][...] = 2.0
    before = {k: v.copy() for k, v in bn.buffers.items()}
    x = np.random.default_rng(4).uniform(0, 1, (6, 1, 8, 8))
    wrapped = eot(net, 4, seed=0)
    wrapped.loss_and_input_grad(x, np.zeros(6, dtype=np.int64))
    wrapped.logits(x)
    for k, v in bn.buffers.items():
        np.testing.assert_array_equal(v, before[k])
    assert bn.use_global_stats is False
    # With dropout off (p → eval), the wrapper is the eval-mode net: the running statistics.
    net.layer("drop").p = 0.0
    np.testing.assert_allclose(eot(net, 2, transform=lambda a, r: a).logits(x), net.logits(x),
                               rtol=1e-10, atol=1e-12)


def test_an_attack_runs_through_it_and_input_transforms():
    net = dropout_net(dtype=np.float32)
    x = np.random.default_rng(5).uniform(0, 1, (6, 1, 8, 8)).astype(np.float32)
    adv = pgd(eot(net, 4, seed=1), x, None, 0.1, steps=5)
    assert np.abs(adv - x).max() <= 0.1 + 1e-6 and adv.dtype == np.float32

    def noisy(a, rng):
        return a + rng.normal(0, 0.05, a.shape).astype(a.dtype)

    wrapped = eot(net, 3, transform=noisy, seed=2)
    loss, dx = wrapped.loss_and_input_grad(x, np.zeros(6, dtype=np.int64))
    assert loss.shape == (6,) and dx.shape == x.shape and np.isfinite(dx).all()


def test_bad_arguments():
    net = dropout_net(p=0.0)
    with pytest.raises(ValueError, match="^eot: .*no random layer"):
        eot(net)
    with pytest.raises(ValueError, match="^eot: samples"):
        eot(dropout_net(), 0)
    with pytest.raises(ValueError, match="^eot: transform"):
        eot(dropout_net(), 3, transform=5)
    wrapped = eot(dropout_net(), 2)
    with pytest.raises(ValueError, match="^eot: backward needs"):
        wrapped.backward(np.zeros((1, 3)), of="logits")
    wrapped.forward_for_backward(np.zeros((1, 1, 8, 8)))
    with pytest.raises(ValueError, match="^eot: weight gradients"):
        wrapped.backward(np.zeros((1, 3)), param_grads=True, of="logits")
