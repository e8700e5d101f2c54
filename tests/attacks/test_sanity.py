"""attacks/sanity.py and attacks/bpda.py: every check passes on a normal trained net and fails
where it should; a net with quantized activations masks its gradients until BPDA."""

import numpy as np
import pytest
from attack_nets import bars, trained_bars_nets
from helpers import single_thread

from robustcnn.attacks import (bpda, carlini_wagner_l2, evaluate, fgsm, format_checks, pgd,
                               sanity_checks)
from robustcnn.attacks.bpda import masked_layers, step_layers
from robustcnn.attacks.sanity import check_gradients

ATTACKS = ["fgsm", "bim", "pgd", "deepfool"]
EPS = [0.05, 0.1, 0.2]


@pytest.fixture(scope="module")
def nets():
    with single_thread():  # module fixtures run before conftest's per-test one
        return trained_bars_nets()


@pytest.fixture(scope="module")
def data():
    return bars(200, seed=1)


def by_name(checks):
    return {c["name"] if isinstance(c, dict) else c.name: c for c in checks}


def test_every_check_passes_on_a_normal_trained_net(nets, data):
    net, _ = nets
    x, y = data
    assert net.accuracy(x, y) >= 0.95
    result = evaluate(net, x, y, ATTACKS, EPS)
    checks = by_name(result["sanity"])
    assert set(checks) == {"gradients", "iterative_vs_single", "monotone_in_eps", "large_eps",
                           "unbounded_succeed", "noise_weaker", "random_forward", "logits"}
    assert result["sanity_passed"], format_checks(result["sanity"])
    assert "WARNING" not in format_checks(result["sanity"])
    # The attacks did something: the checks did not pass vacuously.
    pgd_row = [r for r in result["rows"] if r["attack"] == "pgd-linf" and r["eps"] == 0.2][0]
    assert pgd_row["adversarial_accuracy"] < 0.8
    assert "accuracy 0.0%" in checks["large_eps"]["detail"]


def test_quantized_activations_mask_gradients_until_bpda(nets, data):
    net, quantized = nets
    x, y = data
    assert (quantized.predict(x) == net.predict(x)).mean() >= 0.98
    assert [layer.name for layer in masked_layers(quantized)] == ["relu1", "relu2"]
    masked = evaluate(quantized, x, y, ATTACKS, EPS)
    checks = by_name(masked["sanity"])
    assert not masked["sanity_passed"]
    assert not checks["gradients"]["passed"]
    assert "--bpda" in checks["gradients"]["detail"] and "relu1 (QuantizedReLU)" in \
        checks["gradients"]["detail"]
    assert not checks["large_eps"]["passed"] and not checks["unbounded_succeed"]["passed"]
    assert masked["step_layers"] == {"relu1": "masked", "relu2": "masked"}
    text = format_checks(masked["sanity"])
    assert text.count("WARNING: sanity check FAILED") == 3
    # FGSM sees a zero gradient and moves nothing: the masked net looks perfectly robust.
    fgsm_rows = [r for r in masked["rows"] if r["attack"] == "fgsm"]
    assert all(r["adversarial_accuracy"] == 1.0 and r["linf_max"] == 0 for r in fgsm_rows)

    through = evaluate(quantized, x, y, ATTACKS, EPS, bpda=True)
    assert through["sanity_passed"], format_checks(through["sanity"])
    assert through["step_layers"] == {"relu1": "straight-through", "relu2": "straight-through"}
    acc = {(r["attack"], r["eps"]): r["adversarial_accuracy"] for r in through["rows"]}
    assert acc[("pgd-linf", 0.2)] < 0.8 and acc[("deepfool", None)] <= 0.01
    # The forward pass is the quantized one throughout, and the switch is undone afterwards.
    assert through["clean_accuracy"] == masked["clean_accuracy"]
    assert not any(layer.straight_through for layer in step_layers(quantized))


def test_bpda_restores_each_layer_even_after_an_error(nets, data):
    _, quantized = nets
    x, y = data
    layers = step_layers(quantized)
    layers[1].straight_through = True  # its own setting must come back as it was
    try:
        with pytest.raises(RuntimeError):
            with bpda(quantized) as switched:
                assert switched == layers and all(layer.straight_through for layer in layers)
                raise RuntimeError
        assert [layer.straight_through for layer in layers] == [False, True]
        with bpda(quantized, enabled=False) as switched:
            assert switched == [] and masked_layers(quantized) == [layers[0]]
    finally:
        layers[1].straight_through = False
    with bpda(quantized):
        x_bpda = pgd(quantized, x[:32], y[:32], 0.2, steps=10)
    x_masked = pgd(quantized, x[:32], y[:32], 0.2, steps=10)
    start = x_masked - x[:32]  # the random start only: every step saw a zero gradient
    assert np.abs(x_bpda - x_masked).max() > 0.05 and np.abs(start).max() <= 0.2 + 1e-6


# Each check on a constructed case where it must fail. The results are given as per-example
# correctness, as the evaluation passes them, so the case is exactly the one described.


def constructed(net, x, y, correct, **kw):
    clean_ok = net.predict(x) == y
    return by_name(sanity_checks(net, x, y, correct, [0.1, 0.2], clean_ok=clean_ok, **kw))


def test_iterative_weaker_than_single_step_is_flagged(nets, data):
    net, _ = nets
    x, y = data
    n = len(x)
    correct = {("fgsm", 0.1): np.arange(n) < n // 2, ("bim", 0.1): np.arange(n) < n // 2 + 10,
               ("fgsm", 0.2): np.zeros(n, bool), ("bim", 0.2): np.zeros(n, bool)}
    check = constructed(net, x, y, correct)["iterative_vs_single"]
    assert not check.passed and "bim WEAKER than fgsm" in check.detail
    assert "fgsm 50.0%, bim 55.0%" in check.detail
    correct[("bim", 0.1)] = np.arange(n) < n // 2 + 1  # one example: within the slack
    assert constructed(net, x, y, correct)["iterative_vs_single"].passed


def test_accuracy_rising_with_eps_is_flagged(nets, data):
    net, _ = nets
    x, y = data
    n = len(x)
    correct = {("fgsm", 0.1): np.arange(n) < 20, ("fgsm", 0.2): np.arange(n) < 60}
    check = constructed(net, x, y, correct)["monotone_in_eps"]
    assert not check.passed and "RISES at 0.1→0.2" in check.detail


def test_large_eps_with_accuracy_left_is_flagged(nets, data):
    net, _ = nets
    x, y = data
    n = len(x)
    correct = {("pgd-linf", 0.1): np.zeros(n, bool), ("pgd-linf", 0.2): np.zeros(n, bool),
               ("pgd-linf", 1.0): np.arange(n) < 10}
    check = constructed(net, x, y, correct)["large_eps"]
    assert not check.passed and "accuracy 5.0% on 200 examples" in check.detail
    correct[("pgd-linf", 1.0)] = np.arange(n) < 4  # 2%: at the threshold
    assert constructed(net, x, y, correct)["large_eps"].passed


def test_unbounded_attack_that_fails_is_flagged(nets, data):
    net, _ = nets
    x, y = data
    n = len(x)
    clean = net.predict(x) == y
    correct = {("deepfool", None): clean & (np.arange(n) < 5)}
    check = constructed(net, x, y, correct)["unbounded_succeed"]
    assert not check.passed and "deepfool: fools 97.5%" in check.detail


def test_noise_stronger_than_the_attack_is_flagged(nets, data):
    net, _ = nets
    x, y = data
    n = len(x)
    correct = {("fgsm", 0.1): np.ones(n, bool), ("fgsm", 0.2): np.ones(n, bool),
               ("noise-linf", 0.1): np.ones(n, bool), ("noise-linf", 0.2): np.arange(n) < 150}
    check = constructed(net, x, y, correct)["noise_weaker"]
    assert not check.passed and "fgsm eps 0.2: 100.0% vs noise-linf 75.0% — NOISE STRONGER" in \
        check.detail


class _StubNet:
    """A stand-in net whose input gradient is ones, except NaN for the examples in ``nan`` and
    zero for those in ``zero``; its logits are all zero (no saturated softmax)."""

    layers = []
    dtype = np.dtype(np.float64)

    def logits(self, x, batch_size=256):
        return np.zeros((len(x), 3))

    def __init__(self, nan=(), zero=()):
        self.nan, self.zero = list(nan), list(zero)

    def loss_and_input_grad(self, x, y):
        dx = np.ones_like(x)
        dx[self.nan] = np.nan
        dx[self.zero] = 0
        return np.zeros(len(x)), dx


def test_non_finite_and_zero_gradients_are_flagged():
    x, y = np.zeros((200, 3)), np.zeros(200, int)
    check = check_gradients(_StubNet(nan=[0], zero=[1]), x, y)
    assert not check.passed
    assert "200 examples: 1 with a non-finite gradient, 1 with an all-zero gradient" in \
        check.detail
    assert check_gradients(_StubNet(), x, y).passed
    assert check_gradients(_StubNet(zero=[1, 2]), x, y).passed  # 1% of examples is allowed
    assert not check_gradients(_StubNet(zero=[1, 2, 3]), x, y).passed
    assert not check_gradients(_StubNet(nan=[0]), x, y, batch_size=7).passed


@pytest.mark.parametrize("kwargs,match", [
    (dict(clip=None), "give large_eps when clip is None"),
    (dict(subset=0), "subset must be an integer >= 1"),
    (dict(tol=-0.1), r"tol must be a finite number in \[0, 1\]"),
    (dict(min_success=1.5), "min_success must be a finite number"),
    (dict(large_eps=0.0), r"large_eps must be a finite number in \(0, inf\)"),
    (dict(clip=(1, 0)), "clip low 1.0 must be below high 0.0")])
def test_sanity_checks_bad_arguments(nets, data, kwargs, match):
    net, _ = nets
    x, y = data
    with pytest.raises(ValueError, match="sanity_checks: " + match):
        sanity_checks(net, x, y, {}, [0.1], **kwargs)


def test_saturated_softmax_is_flagged(nets, data):
    # Logits scaled as a defensive-distillation student's (T = 100): the loss gradient
    # underflows in float32 on nearly every example, although the logits still have gradients
    net, _ = nets
    x, y = data
    hot = net.copy()
    hot.params["ip2"]["weight"][...] *= 100
    hot.params["ip2"]["bias"][...] *= 100
    assert hot.accuracy(x, y) == net.accuracy(x, y)
    check = check_gradients(hot, x, y)
    assert not check.passed
    assert "SOFTMAX SATURATION" in check.detail
    assert check_gradients(net, x, y).passed
    # FGSM fails on the scaled net; C&W on the logits does not (Carlini & Wagner 2016)
    x, y = x[:40], y[:40]
    ok = hot.predict(x) == y
    fooled = {name: (model.predict(adv) != y)[ok].mean() for name, model, adv in (
        ("fgsm", hot, fgsm(hot, x, y, 0.2)), ("plain fgsm", net, fgsm(net, x, y, 0.2)),
        ("cw", hot, carlini_wagner_l2(hot, x, y, max_iter=100, binary_search_steps=4)))}
    assert fooled["fgsm"] < fooled["plain fgsm"] - 0.3, fooled
    assert fooled["cw"] > 0.95, fooled
