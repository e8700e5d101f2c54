"""Argument validation of every attack (ValueError naming the attack, before any work), eps == 0,
default labels and output types."""

import numpy as np
import pytest
from attack_nets import make_linear_net

from robustcnn.attacks import (ATTACKS, adversarial_patch, apply_patch, bim, carlini_wagner_l2,
                               deepfool, fgm, fgsm, hop_skip_jump, illc, jsma, lbfgs, pgd,
                               random_noise, spsa, square, transfer, worst_case)

NET = make_linear_net(np.array([[1.0, -1.0], [-1.0, 1.0], [0.5, 0.5]]), np.zeros(3))
X = np.array([[0.3, 0.6], [0.9, 0.1]])
Y = np.array([1, 0])

ALL = [fgm, fgsm, bim, illc, pgd, deepfool, carlini_wagner_l2, jsma, lbfgs, random_noise,
       square, spsa, hop_skip_jump]
NAMES = {fgm: "fgm", fgsm: "fgsm", bim: "bim", illc: "illc", pgd: "pgd", deepfool: "deepfool",
         carlini_wagner_l2: "carlini_wagner_l2", jsma: "jsma", lbfgs: "lbfgs",
         random_noise: "random_noise", square: "square", spsa: "spsa",
         hop_skip_jump: "hop_skip_jump"}

COMMON_BAD = [
    (dict(eps=-0.1), "eps"),
    (dict(eps=float("nan")), "eps"),
    (dict(eps=float("inf")), "eps"),
    (dict(eps="big"), "eps"),
    (dict(eps=0.1, clip=(1, 0)), "clip"),
    (dict(eps=0.1, clip=(0.5, 0.5)), "clip low 0.5 must be below high 0.5"),
    (dict(eps=0.1, clip=(0.5, 1.0)), "outside clip"),
    (dict(eps=0.1, clip=(0, float("inf"))), "clip"),
    (dict(eps=0.1, clip="01"), "clip"),
    (dict(eps=0.1, batch_size=0), "batch_size"),
    (dict(eps=0.1, batch_size=2.5), "batch_size"),
]

SPECIFIC_BAD = [
    (fgm, dict(norm="l1"), "norm"),
    (pgd, dict(norm="l0"), "norm"),
    (random_noise, dict(norm=1), "norm"),
    (bim, dict(steps=0), "steps must be an integer >= 1, got 0"),
    (bim, dict(alpha=0.0), "alpha"),
    (bim, dict(alpha=-1), "alpha"),
    (illc, dict(steps=-2), "steps"),
    (illc, dict(targeted=True), "targeted"),
    (pgd, dict(steps=0), "steps must be an integer >= 1, got 0"),
    (pgd, dict(restarts=0), "restarts"),
    (pgd, dict(alpha=float("nan")), "alpha"),
    (pgd, dict(restarts=3, random_init=False), "restarts"),
    (deepfool, dict(candidates=1), "candidates"),
    (deepfool, dict(overshoot=-0.1), "overshoot"),
    (deepfool, dict(max_iter=0), "max_iter"),
    (deepfool, dict(targeted=True), "targeted"),
    (carlini_wagner_l2, dict(confidence=-1), "confidence"),
    (carlini_wagner_l2, dict(initial_const=0), "initial_const"),
    (carlini_wagner_l2, dict(binary_search_steps=0), "binary_search_steps"),
    (carlini_wagner_l2, dict(max_iter=0), "max_iter"),
    (carlini_wagner_l2, dict(learning_rate=0), "learning_rate"),
    (jsma, dict(gamma=0), "gamma"),
    (jsma, dict(gamma=1.5), "gamma"),
    (jsma, dict(clip=None), "clip=None"),
    (lbfgs, dict(initial_const=-1), "initial_const"),
    (lbfgs, dict(search_steps=0), "search_steps"),
    (lbfgs, dict(max_iter=0), "max_iter"),
    (random_noise, dict(targeted=True), "targeted"),
    (square, dict(eps=0.1, n_queries=0), "n_queries"),
    (square, dict(eps=0.1, loss="hinge"), "loss"),
    (spsa, dict(samples=0), "samples"),
    (spsa, dict(delta=-0.01), "delta"),
    (hop_skip_jump, dict(clip=None), "valid range"),
    (hop_skip_jump, dict(norm="l1"), "norm"),
]


@pytest.mark.parametrize("attack", ALL, ids=lambda a: a.__name__)
@pytest.mark.parametrize("kwargs, match", COMMON_BAD, ids=[m for _, m in COMMON_BAD])
def test_common_bad_arguments(attack, kwargs, match):
    with pytest.raises(ValueError, match=f"^{NAMES[attack]}: .*{match}"):
        attack(NET, X, Y, **kwargs)


@pytest.mark.parametrize("attack, kwargs, match", SPECIFIC_BAD,
                         ids=[f"{a.__name__}-{m}" for a, _, m in SPECIFIC_BAD])
def test_specific_bad_arguments(attack, kwargs, match):
    with pytest.raises(ValueError, match=f"^{NAMES[attack]}: .*{match}"):
        attack(NET, X, Y, **kwargs)


def test_bad_arguments_are_caught_before_any_work():
    # A net that fails if it is ever run: validation must come first.
    class Exploding:
        input_shape, num_classes, dtype = (2,), 3, np.dtype(np.float64)

        def __getattr__(self, name):
            raise AssertionError(f"the net was used ({name}) before the arguments were checked")

    for attack, kwargs, match in SPECIFIC_BAD:
        if match == "outside clip":
            continue
        with pytest.raises(ValueError, match=f"^{NAMES[attack]}: "):
            attack(Exploding(), X, None, **kwargs)


@pytest.mark.parametrize("attack", ALL, ids=lambda a: a.__name__)
def test_bad_labels_and_inputs(attack):
    with pytest.raises(ValueError, match="labels"):
        attack(NET, X, [0, 1, 2], eps=0.1)
    with pytest.raises(ValueError, match="labels"):
        attack(NET, X, [0, 7], eps=0.1)
    with pytest.raises(ValueError, match="shape"):
        attack(NET, X[:, :1], None, eps=0.1)
    with pytest.raises(TypeError, match="numpy array"):
        attack(NET, X.tolist(), None, eps=0.1)


def test_targeted_attacks_without_targets():
    for attack in (jsma, lbfgs):
        with pytest.raises(ValueError, match="needs the target classes"):
            attack(NET, X, None, targeted=True)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_eps_zero_returns_a_copy_of_the_input(name):
    out = ATTACKS[name](NET, X, Y, 0.0)
    np.testing.assert_array_equal(out, X)  # exact: nothing may move
    assert out is not X and out.dtype == NET.dtype


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_output_shape_dtype_and_default_labels(name):
    net32 = make_linear_net(np.array([[1.0, -1.0], [-1.0, 1.0], [0.5, 0.5]]), np.zeros(3),
                            dtype=np.float32)
    kwargs = {"eps": 0.3} if name not in ("deepfool", "cw-l2", "jsma", "lbfgs") else {}
    if name == "cw-l2":
        kwargs = dict(max_iter=20, binary_search_steps=2)
    out = ATTACKS[name](net32, X, **kwargs)
    assert out.shape == X.shape and out.dtype == np.float32
    # y=None means the net's own predictions.
    np.testing.assert_array_equal(out, ATTACKS[name](net32, X, net32.predict(X), **kwargs))


def test_registry_names():
    assert set(ATTACKS) == {"fgsm", "fgm-l2", "bim", "illc", "pgd-linf", "pgd-l2", "deepfool",
                            "cw-l2", "jsma", "lbfgs", "noise-linf", "noise-l2", "square-linf",
                            "square-l2", "spsa", "hsj-l2", "hsj-linf", "apgd-ce-linf",
                            "apgd-ce-l2", "apgd-dlr-linf", "apgd-dlr-l2", "apgd-t-linf",
                            "apgd-t-l2", "fab-linf", "fab-l2", "fab-t-linf", "fab-t-l2",
                            "autoattack-linf", "autoattack-l2"}


def test_patch_transfer_and_worst_case_arguments():
    img = np.zeros((2, 1, 4, 4))
    from attack_nets import make_convnet
    net = make_convnet()
    with pytest.raises(ValueError, match="^adversarial_patch: needs images"):
        adversarial_patch(NET, X, 0)
    with pytest.raises(ValueError, match="^adversarial_patch: patch_size 9 does not fit"):
        adversarial_patch(net, np.zeros((2, 1, 8, 8)), 0, patch_size=9)
    with pytest.raises(ValueError, match="^adversarial_patch: target"):
        adversarial_patch(net, np.zeros((2, 1, 8, 8)), 3)
    with pytest.raises(ValueError, match="^adversarial_patch: steps"):
        adversarial_patch(net, np.zeros((2, 1, 8, 8)), 0, steps=0)
    with pytest.raises(ValueError, match="^apply_patch: a location"):
        apply_patch(img, np.zeros((1, 2, 2)), np.array([[3, 0], [0, 0]]))
    with pytest.raises(ValueError, match="^apply_patch: a 2-channel patch"):
        apply_patch(img, np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="^transfer: unknown attack 'nope'"):
        transfer(NET, NET, X, Y, "nope", 0.1)
    with pytest.raises(ValueError, match="^transfer: the source net takes"):
        transfer(NET, net, X, Y, "fgsm", 0.1)
    with pytest.raises(ValueError, match="^worst_case: needs at least one attack"):
        worst_case(NET, X, Y, [])
    with pytest.raises(ValueError, match="^worst_case: unknown attack"):
        worst_case(NET, X, Y, [("fgsn", {})])


def test_progress_reports_each_outer_batch_once():
    """The attacks report the examples of each outer batch to ``progress`` (how the study's
    per-cell bars follow an attack), and the result does not depend on it."""
    from attack_nets import bars, bars_convnet

    from robustcnn.attacks import fgsm, pgd

    net = bars_convnet()
    x, y = bars(10)
    for attack, kwargs in ((fgsm, {}), (pgd, {"steps": 3})):
        seen = []
        reported = attack(net, x, y, 0.1, batch_size=4, progress=seen.append, **kwargs)
        assert seen == [4, 4, 2]
        np.testing.assert_array_equal(reported, attack(net, x, y, 0.1, batch_size=4, **kwargs))
