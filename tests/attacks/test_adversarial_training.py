"""Adversarial training: the objective's neutral settings give the plain gradients, crafted
examples stay in the ball and the range, crafting runs in eval mode, and training with it makes a
net robust where plain training does not."""

import json

import numpy as np
import pytest

from robustcnn.attacks import fgsm
from robustcnn.attacks.adversarial_training import AdversarialObjective
from robustcnn.engine import BatchNorm, Conv2d, Linear, MaxPool2d, Net, ReLU
from robustcnn.engine.train import SGD, Schedule, fit


def bars(n, seed=0):
    """(n, 1, 8, 8) images in [0, 1]: class k is a bright bar on rows 2k + 1, 2k + 2."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.uniform(0.0, 0.3, (n, 1, 8, 8))
    for i, k in enumerate(y):
        x[i, 0, 2 * k + 1:2 * k + 3, 1:7] += 0.5
    return x, y.astype(np.int64)


def grads_of(net):
    return {f"{l}/{k}": g.copy() for l, d in net.grads.items() for k, g in d.items()}


def assert_same_grads(a, b):
    assert a.keys() == b.keys()
    for key in a:
        # Determinism check: the same computation on the same numbers, so the same bits.
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("objective", [AdversarialObjective("fgsm", eps=0.1, fraction=0.0),
                                       AdversarialObjective("pgd", eps=0.0, fraction=1.0),
                                       AdversarialObjective("fgsm", eps=0.0, fraction=1.0)],
                         ids=["fraction0", "pgd-eps0", "fgsm-eps0"])
def test_neutral_settings_give_the_plain_loss_and_gradients(objective, convnet):
    x, y = bars(16)
    plain = convnet().train()
    loss, logits = plain.loss_and_grad(x, y)
    net = convnet().train()
    loss_adv, logits_adv = objective(net, x, y)
    assert loss_adv == loss  # determinism check: the same pass on the same batch
    np.testing.assert_array_equal(logits_adv, logits)
    assert_same_grads(grads_of(net), grads_of(plain))
    assert net.training


@pytest.mark.parametrize("attack,kwargs", [("fgsm", {}), ("pgd", {"steps": 3}),
                                           ("pgd-l2", {"steps": 2, "alpha": 0.05}),
                                           ("bim", {"steps": 2, "alpha": 0.05})])
def test_crafted_examples_lie_in_the_ball_and_the_range(attack, kwargs, convnet):
    x, y = bars(20, seed=1)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.0, 1.0  # pixels at the ends of the range
    x_before = x.copy()
    net = convnet()
    eps = 0.1
    objective = AdversarialObjective(attack, eps=eps, fraction=0.5, **kwargs)
    mixed = objective.adversarial_batch(net, x, y)
    np.testing.assert_array_equal(x, x_before)  # the caller's batch is left alone
    assert mixed.shape == x.shape and mixed.dtype == net.dtype
    delta = (mixed - x).reshape(len(x), -1)
    norms = np.abs(delta).max(1) if attack != "pgd-l2" else np.linalg.norm(delta, axis=1)
    assert norms[:10].max() <= eps * (1 + 1e-9)
    assert norms[:10].min() > 0.5 * eps  # the first half did move …
    np.testing.assert_array_equal(mixed[10:], x[10:])  # … and the second half did not
    assert mixed.min() >= 0.0 and mixed.max() <= 1.0
    # Deterministic: the same batch gives the same examples.
    np.testing.assert_array_equal(objective.adversarial_batch(net, x, y), mixed)


def test_fgsm_examples_raise_the_loss_of_the_true_labels(convnet):
    x, y = bars(32, seed=2)
    net = convnet()
    mixed = AdversarialObjective("fgsm", eps=0.05, fraction=1.0).adversarial_batch(net, x, y)
    clean, _ = net.loss_and_input_grad(x, y)
    adv, _ = net.loss_and_input_grad(mixed, y)
    assert (adv > clean).mean() > 0.9


def test_steps_and_alpha_reach_the_attack(convnet):
    seen = []
    objective = AdversarialObjective("pgd", eps=0.1, fraction=1.0, steps=7, alpha=0.02, seed=3)

    def spy(net, x, y, eps, **kwargs):
        seen.append((eps, kwargs))
        return x

    objective._attack = spy
    x, y = bars(4)
    objective(convnet(), x, y)
    (eps, kwargs), = seen
    assert eps == 0.1 and kwargs["steps"] == 7 and kwargs["alpha"] == 0.02
    assert kwargs["clip"] == (0.0, 1.0) and isinstance(kwargs["seed"], int)


def bn_net():
    net = Net([Conv2d("conv1", 4, kernel=3), BatchNorm("bn1"), ReLU("relu1"),
               MaxPool2d("pool1", 2, 2), Linear("ip1", 3)], input_shape=(1, 8, 8),
              dtype=np.float64, seed=0)
    bn = net["bn1"]
    rng = np.random.default_rng(7)
    bn.buffers["mean"][...] = rng.normal(0, 0.1, bn.buffers["mean"].shape)
    bn.buffers["var"][...] = rng.uniform(0.5, 2.0, bn.buffers["var"].shape)
    return net


def test_batch_norm_nets_craft_in_eval_mode_and_train_in_train_mode():
    x, y = bars(16, seed=3)
    objective = AdversarialObjective("pgd", eps=0.1, fraction=0.5, steps=3)
    net = bn_net().train()
    modes = []
    forward = net["bn1"].forward
    net["bn1"].forward = lambda xs, ctx: (modes.append(ctx.train), forward(xs, ctx))[1]
    buffers = {k: v.copy() for k, v in net["bn1"].buffers.items()}

    mixed = objective.adversarial_batch(net, x, y)
    assert modes and not any(modes)  # every crafting pass in eval mode
    assert net.training  # the caller's mode is back
    for k, v in net["bn1"].buffers.items():
        np.testing.assert_array_equal(v, buffers[k], err_msg=k)  # crafting changed no statistic

    # The objective is crafting + one pass in the caller's mode on the mixed batch: statistics
    # and gradients as after that pass alone, whatever batch norm does in train mode.
    modes.clear()
    loss, _ = objective(net, x, y)
    assert modes[-1] is True and not any(modes[:-1])
    reference = bn_net().train()
    loss_ref, _ = reference.loss_and_grad(mixed, y)
    assert loss == loss_ref  # determinism check, as below
    assert_same_grads(grads_of(net), grads_of(reference))
    for k, v in net["bn1"].buffers.items():
        np.testing.assert_array_equal(v, reference["bn1"].buffers[k], err_msg=k)


def test_config_is_json_ready_and_names_the_canonical_attack():
    config = AdversarialObjective("PGD", eps=0.3, fraction=1.0, steps=10, seed=2).config()
    assert json.loads(json.dumps(config)) == config
    assert config["attack"] == "pgd-linf" and config["labels"] == "true"
    assert config["steps"] == 10 and config["eps"] == 0.3 and config["seed"] == 2


@pytest.mark.parametrize("kwargs,match", [
    (dict(attack="nope"), "unknown attack 'nope'"),
    (dict(attack="deepfool"), "not a bounded attack"),
    (dict(eps=-0.1), "eps must be finite and >= 0"),
    (dict(eps=float("nan")), "eps must be finite"),
    (dict(fraction=1.5), r"fraction must be a finite number in \[0.0, 1.0\]"),
    (dict(fraction=-0.1), "fraction"),
    (dict(attack="pgd", steps=0), "steps must be an integer >= 1"),
    (dict(attack="pgd", alpha=0.0), "alpha must be"),
    (dict(attack="fgsm", steps=5), "steps and alpha apply to the iterative attacks"),
    (dict(seed=-1), "seed must be an integer >= 0"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdversarialObjective(**kwargs)


def spread_signal(n, seed):
    """Two classes in 64 features: feature 0 tells them apart by 0.6 (robust to L∞ eps < 0.3),
    the other 63 each by only 0.1 under noise of 0.05. Together the weak features separate the
    classes as well as feature 0, and plain training leans on them; an FGSM step of 0.1 moves
    each of them past the other class's mean, so only a net that relies on feature 0 survives."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = 2.0 * y - 1
    x = 0.5 + 0.05 * s[:, None] + rng.normal(0, 0.05, (n, 64))
    x[:, 0] = 0.5 + 0.3 * s + rng.normal(0, 0.02, n)
    return np.clip(x, 0, 1).astype(np.float32), y


@pytest.mark.parametrize("objective", [AdversarialObjective("fgsm", eps=0.1, fraction=0.5),
                                       AdversarialObjective("pgd", eps=0.1, fraction=1.0,
                                                            steps=5)],
                         ids=["fgsm-half", "pgd-all"])
def test_adversarial_training_makes_a_net_robust_where_plain_training_does_not(objective):
    x, y = spread_signal(512, seed=0)
    xt, yt = spread_signal(512, seed=1)

    def train(objective):
        net = Net([Linear("ip", 2)], input_shape=(64,), seed=0)
        fit(net, x, y, epochs=10, batch_size=32, optimizer=SGD(0.9, 0.0),
            schedule=Schedule("cosine", 0.01, total=160), progress=False, log=None,
            objective=objective)
        return net.accuracy(xt, yt), net.accuracy(fgsm(net, xt, yt, 0.1), yt)

    plain_clean, plain_fgsm = train(None)
    adv_clean, adv_fgsm = train(objective)
    # Measured: plain 100% clean, 0% under FGSM; adversarial 100% clean, 96–100% under FGSM.
    assert plain_clean > 0.95 and adv_clean > 0.95
    assert plain_fgsm < 0.2
    assert adv_fgsm > 0.8
