"""AutoAttack: each attack on the points still robust, the per-point worst case, robust accuracy
per stage, determinism, and the gradient-masking flags on nets that mask (quantised
activations, a random forward pass, probabilities for logits) and on one that does not."""

import numpy as np
import pytest
from attack_nets import bars, bars_convnet, trained_bars_nets

from robustcnn.attacks import autoattack, bpda
from robustcnn.attacks.autoattack import VERSIONS
from robustcnn.attacks.masking import (check_logits, check_random_forward,
                                       check_square_vs_whitebox, check_zero_gradient)
from robustcnn.attacks.norms import perturbation_norms
from robustcnn.engine import Dropout, Linear, Softmax
from robustcnn.engine.layers import Flatten

FAST = dict(n_iter=10, n_queries=200)


@pytest.fixture(scope="module")
def nets():
    return trained_bars_nets()


def flags(info):
    return {f["name"]: f for f in info["flags"]}


@pytest.mark.parametrize("norm, eps", [("linf", 0.2), ("l2", 0.9)])
def test_standard_version_stages_and_worst_case(nets, norm, eps):
    net = nets[0]
    x, y = bars(60, seed=21)
    y[:3] = (y[:3] + 1) % 3  # three points wrong from the start
    adv, info = autoattack(net, x, y, eps, norm=norm, return_info=True, **FAST)
    assert info["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    clean = net.predict(x) == y
    assert info["clean_accuracy"] == pytest.approx(clean.mean())
    # Each stage attacks exactly what the earlier ones left robust; accuracy only falls.
    robust_before = clean.sum()
    for stage in info["stages"]:
        assert stage["attacked"] == robust_before
        robust_before -= stage["broken"]
        assert stage["robust_accuracy"] == pytest.approx(robust_before / len(x))
    assert info["robust_accuracy"] == pytest.approx(info["robust"].mean())
    assert info["stages"][0]["broken"] > 0
    # The per-point worst case: a broken point's x_adv fools the net within eps, a robust one
    # is returned unchanged.
    broken = ~info["robust"]
    assert np.all(net.predict(adv)[broken] != y[broken])
    np.testing.assert_array_equal(adv[info["robust"]], x[info["robust"]])
    assert perturbation_norms(x, adv)[norm].max() <= eps * (1 + 1e-5)
    assert adv.min() >= 0 and adv.max() <= 1
    assert set(info["broken_by"][~clean]) == {"clean"}
    assert all(info["broken_by"][i] in info["attacks"] for i in np.flatnonzero(broken & clean))
    assert all(f["passed"] for f in info["flags"]), info["flags"]
    assert info["stages"][-1]["queries"]["total"] > 0
    again = autoattack(net, x, y, eps, norm=norm, **FAST)
    np.testing.assert_array_equal(again, adv)  # deterministic given the seed


def test_plus_and_rand_versions(nets):
    net = nets[0]
    x, y = bars(30, seed=22)
    _, plus = autoattack(net, x, y, 0.2, version="plus", return_info=True, **FAST)
    assert plus["attacks"] == list(VERSIONS["plus"])
    _, rand = autoattack(net, x, y, 0.2, version="rand", return_info=True, **FAST)
    assert rand["attacks"] == ["apgd-ce", "apgd-dlr"]
    assert rand["eot"] == 1  # deterministic forward pass: one sample is the expectation
    _, standard = autoattack(net, x, y, 0.2, return_info=True, **FAST)
    # plus runs more restarts and attacks: never weaker than standard by more than a point.
    assert plus["robust_accuracy"] <= standard["robust_accuracy"] + 1 / 30


def test_custom_attacks_and_progress(nets):
    net = nets[0]
    x, y = bars(25, seed=23)
    seen = []
    _, info = autoattack(net, x, y, 0.2, attacks=["fab-t", "apgd-ce"], progress=seen.append,
                         return_info=True, **FAST)
    assert [s["attack"] for s in info["stages"]] == ["fab-t", "apgd-ce"]
    assert sum(seen) == len(x) and all(k > 0 for k in seen)


def test_quantized_net_raises_the_masking_flags_and_bpda_clears_them(nets):
    """QuantizedReLU: the input gradient is zero, APGD cannot move, Square (no gradient) breaks
    what it missed; under BPDA the gradient flags clear."""
    _, quantized = nets
    x, y = bars(80, seed=24)
    _, info = autoattack(quantized, x, y, 0.2, return_info=True, n_iter=10, n_queries=300)
    f = flags(info)
    assert not f["differentiable"]["passed"] and "BPDA" in f["differentiable"]["detail"]
    assert not f["zero_gradient"]["passed"]
    square = next(s for s in info["stages"] if s["attack"] == "square")
    white = sum(s["broken"] for s in info["stages"] if s["attack"] != "square")
    assert square["broken"] > white
    assert not f["square_vs_whitebox"]["passed"]
    with bpda(quantized):
        _, info = autoattack(quantized, x, y, 0.2, return_info=True, n_iter=10, n_queries=300)
    f = flags(info)
    assert f["differentiable"]["passed"] and f["zero_gradient"]["passed"]
    assert info["stages"][0]["broken"] > 0


def test_random_forward_flag_on_dropout_in_train_mode():
    net = bars_convnet()
    layers = net.layers[:-1] + [Dropout("drop", 0.5), net.layers[-1]]
    from robustcnn.engine import Net
    noisy = Net(layers, input_shape=(1, 8, 8))
    x, _ = bars(10, seed=25)
    assert check_random_forward(noisy, x).passed  # eval mode: deterministic
    noisy.train()
    check = check_random_forward(noisy, x)
    assert not check.passed and "version='rand'" in check.detail
    assert noisy.training


def test_logits_flag():
    x, _ = bars(10, seed=26)
    base = bars_convnet()
    ends_in_softmax = type(base)(base.layers + [Softmax("prob")], input_shape=(1, 8, 8))
    check = check_logits(ends_in_softmax, x)
    assert check.passed and "Softmax output" in check.detail  # the engine attacks its input
    # A softmax the engine does not see as the output (something follows it): probabilities.
    hidden = type(base)(bars_convnet().layers + [Softmax("prob"), Flatten("flat")],
                        input_shape=(1, 8, 8))
    check = check_logits(hidden, x)
    assert not check.passed and "PROBABILITIES" in check.detail


def test_flag_thresholds():
    attacked = np.ones(200, dtype=bool)
    zero = np.zeros(200, dtype=bool)
    zero[:2] = True                                    # 1.0%: allowed
    assert check_zero_gradient(zero, attacked).passed
    zero[2] = True                                     # 1.5%
    assert not check_zero_gradient(zero, attacked).passed
    assert check_square_vs_whitebox(2, 1000).passed    # 0.2 pp: allowed
    assert not check_square_vs_whitebox(3, 1000).passed


def test_eps_zero_and_bad_arguments(nets):
    net = nets[0]
    x, y = bars(5, seed=27)
    np.testing.assert_array_equal(autoattack(net, x, y, 0.0), x)
    for kwargs, match in [(dict(version="fast"), "version"), (dict(attacks=["pgd"]), "attacks"),
                          (dict(attacks=[]), "attacks"), (dict(targeted=True), "targeted"),
                          (dict(n_iter=0), "n_iter"), (dict(n_queries=0), "n_queries"),
                          (dict(eot=0), "eot"), (dict(norm="l1"), "norm")]:
        with pytest.raises(ValueError, match=f"^autoattack: .*{match}"):
            autoattack(net, x, y, 0.1, **kwargs)


def test_two_classes_skip_the_dlr_attacks():
    from robustcnn.engine import Net
    net = Net([Linear("ip", 2)], input_shape=(1, 8, 8))
    x, _ = bars(6, seed=28)
    _, info = autoattack(net, x, None, 0.1, return_info=True, **FAST)
    assert [s["attack"] for s in info["stages"]] == ["apgd-ce", "fab-t", "square"]
    assert info["skipped"] == ["apgd-t: the DLR loss needs 3 classes"]


def test_evaluate_reports_stages_queries_and_flags(nets):
    from robustcnn.attacks.evaluate import evaluate, format_evaluation

    _, quantized = nets
    x, y = bars(30, seed=29)
    seen = []
    result = evaluate(quantized, x, y, ["autoattack", "square"], [0.2], sanity=True,
                      sanity_examples=10, progress=seen.append,
                      options={"autoattack": {"n_iter": 5, "n_queries": 100, "version":
                                              "standard"}, "square": {"n_queries": 100}})
    assert sum(seen) >= 2 * len(x)
    aa, sq = result["rows"]
    assert aa["version"] == "standard" and len(aa["stages"]) == 4
    assert aa["stages"][-1]["robust_accuracy"] == pytest.approx(aa["adversarial_accuracy"])
    assert sq["queries"]["total"] > 0 and sq["queries"]["median"] <= 100
    names = [c["name"] for c in result["sanity"]]
    assert {"zero_gradient", "square_vs_whitebox", "differentiable"} <= set(names)
    assert names.count("random_forward") == 1  # the sanity check's, not the attack's again
    assert not result["sanity_passed"]
    text = format_evaluation(result)
    assert "apgd-ce" in text and "→ square" in text
    import json
    json.dumps(result)  # JSON-ready


def test_rand_version_attacks_a_dropout_net_through_eot(nets):
    """A net with Dropout: the rand version attacks the 20-pass average (``eot``) and counts a
    point broken when that average misclassifies it."""
    from robustcnn.engine import Net

    trained = nets[0]
    layers = bars_convnet().layers
    noisy = Net(layers[:-1] + [Dropout("drop", 0.3), layers[-1]], input_shape=(1, 8, 8))
    for name, params in trained.params.items():
        for key, value in params.items():
            noisy.params[name][key][...] = value
    x, y = bars(20, seed=30)
    adv, info = autoattack(noisy, x, y, 0.25, version="rand", eot=4, n_iter=10,
                           return_info=True)
    assert info["eot"] == 4
    assert info["stages"][0]["broken"] > 0
    _, plain = autoattack(noisy, x, y, 0.25, version="rand", eot=1, n_iter=10,
                          return_info=True)
    assert plain["eot"] == 1
    assert perturbation_norms(x, adv)["linf"].max() <= 0.25 * (1 + 1e-5)
