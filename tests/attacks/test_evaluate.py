"""attacks/evaluate.py (robustness_table's norms, worst_case), transfer and the patch."""

import numpy as np
import pytest
from attack_nets import make_linear_net

from robustcnn.attacks import (adversarial_patch, apply_patch, deepfool, fgsm, format_table,
                               jsma, patch_success_rate, random_locations, robustness_table,
                               transfer, transfer_accuracy, worst_case)
from robustcnn.engine import Conv2d, Linear, MaxPool2d, Net

# Class 1 where the second coordinate wins.
SWAP_NET = make_linear_net(np.array([[5.0, -5.0], [-5.0, 5.0]]), np.zeros(2))


def test_robustness_table_norms():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(50, 2))
    y = SWAP_NET.predict(x)
    rows = robustness_table(SWAP_NET, x, y, [0.0, 0.1], attack=fgsm, clip=None)
    old_keys = {"eps", "clean_accuracy", "adversarial_accuracy", "success_rate", "linf_mean",
                "l2_mean", "examples"}
    for r in rows:
        assert old_keys <= set(r)
    assert rows[0]["l0_mean"] == 0 and rows[0]["l2_median"] == 0
    # Without clipping FGSM moves both coordinates by exactly eps.
    r = rows[1]
    assert r["l0_mean"] == pytest.approx(2) and r["l0_median"] == pytest.approx(2)
    assert r["linf_mean"] == pytest.approx(0.1) and r["linf_median"] == pytest.approx(0.1)
    assert r["l2_mean"] == pytest.approx(0.1 * np.sqrt(2)) == r["l2_median"]
    # JSMA by name (eps = the step): L0 counts the changed features.
    rows = robustness_table(SWAP_NET, x, y, [0.05], attack="jsma", gamma=1.0)
    adv = jsma(SWAP_NET, x, y, 0.05, gamma=1.0)
    l0 = ((adv - x) != 0).sum(1)
    assert rows[0]["l0_mean"] == pytest.approx(l0.mean())
    assert rows[0]["l0_median"] == pytest.approx(np.median(l0))
    assert "mean L0" in format_table(rows)


def test_robustness_table_minimal_attack_with_unbounded_eps():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(20, 2))
    y = SWAP_NET.predict(x)
    rows = robustness_table(SWAP_NET, x, y, [None], attack=deepfool)
    d = np.abs(x[:, 0] - x[:, 1]) / np.sqrt(2)  # distance to the diagonal
    assert rows[0]["adversarial_accuracy"] == 0
    assert rows[0]["l2_median"] == pytest.approx(np.median(1.02 * d), rel=1e-3)
    assert "none" in format_table(rows)


def flip_where(mask):
    """An 'attack' that swaps the coordinates (flipping SWAP_NET's label) where mask is set."""
    def attack(net, x, y, eps=None, *, batch_size=256):
        out = x.copy()
        out[mask] = x[mask][:, ::-1]
        return out
    return attack


def test_worst_case_is_the_per_example_minimum():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, size=(12, 2))
    y = SWAP_NET.predict(x)
    y[0] = 1 - y[0]  # example 0 is wrong before any attack
    a = np.arange(12) % 2 == 0
    b = np.arange(12) % 3 == 0
    result = worst_case(SWAP_NET, x, y, [(flip_where(a), {}), (flip_where(b), {}),
                                         ("fgsm", {"eps": 0.0})])
    ok = result["correct"]
    assert list(ok) == ["clean", "attack#0", "attack#1", "fgsm"]
    np.testing.assert_array_equal(ok["clean"], np.arange(12) != 0)
    np.testing.assert_array_equal(ok["attack#0"], ~a ^ (np.arange(12) == 0))
    expected = (np.arange(12) != 0) & ~a & ~b
    np.testing.assert_array_equal(result["robust"], expected)
    assert result["worst_case_accuracy"] == pytest.approx(expected.mean())
    assert result["accuracy"]["fgsm"] == pytest.approx(11 / 12)
    assert result["worst_attack"][0] == "clean" and result["worst_attack"][2] == "attack#0"
    assert result["worst_attack"][3] == "attack#1" and result["worst_attack"][1] is None
    # A dict works too, with names as labels.
    by_name = worst_case(SWAP_NET, x, y, {"fgsm": {"eps": 0.5}, "deepfool": {}})
    assert by_name["worst_case_accuracy"] <= min(by_name["accuracy"].values())


def test_transfer_crafts_on_the_source_and_measures_the_target():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, size=(30, 2))
    y = SWAP_NET.predict(x)
    weak = make_linear_net(np.array([[1.0, -1.0], [-1.0, 1.0]]), np.zeros(2))  # same boundary
    other = make_linear_net(np.array([[5.0, 0.0], [0.0, 0.0]]), np.array([0.0, 2.5]))  # x₀ only
    adv = transfer(SWAP_NET, weak, x, y, "fgsm", 0.3, clip=None)
    np.testing.assert_allclose(adv, fgsm(SWAP_NET, x, y, 0.3, clip=None), rtol=0, atol=0)
    same = transfer_accuracy(weak, x, adv, y)
    assert same["accuracy"] == pytest.approx(SWAP_NET.accuracy(adv, y))
    assert same["clean_accuracy"] == 1.0
    assert same["success_rate"] == pytest.approx(1 - same["accuracy"])
    elsewhere = transfer_accuracy(other, x, adv, y)
    assert elsewhere["accuracy"] == pytest.approx(other.accuracy(adv, y))
    assert elsewhere["accuracy"] != pytest.approx(same["accuracy"])
    # An attack function works as well as a name; the target net is never asked.
    np.testing.assert_allclose(transfer(SWAP_NET, other, x, y, fgsm, 0.3, clip=None), adv,
                               rtol=0, atol=0)
    assert np.abs(fgsm(other, x, y, 0.3, clip=None) - adv).max() > 0.1


def test_apply_patch_and_locations():
    x = np.zeros((3, 2, 6, 6))
    patch = np.arange(8, dtype=float).reshape(2, 2, 2) + 1
    out, where = apply_patch(x, patch, np.array([[0, 0], [4, 4], [1, 3]]))
    assert (x == 0).all()  # the input is not modified
    for n, (r, c) in enumerate(where):
        np.testing.assert_array_equal(out[n, :, r:r + 2, c:c + 2], patch)
        rest = out[n].copy()
        rest[:, r:r + 2, c:c + 2] = 0
        assert (rest == 0).all()
    loc = random_locations(500, (6, 6), 2, seed=1)
    assert loc.min() == 0 and loc.max() == 4
    np.testing.assert_array_equal(apply_patch(x, patch, seed=4)[1], random_locations(3, (6, 6),
                                                                                     2, 4))


def detector_net():
    """conv (3×3) → global max pool → ip: class 2 wins only where some 3×3 window matches
    filter 0's sign pattern almost perfectly (logit 4 · max response vs 11 for class 0); no
    uniform-noise image does, and the best patch does everywhere (4 · 3.48 = 13.9)."""
    net = Net([Conv2d("conv", 2, kernel=3), MaxPool2d("pool", kernel=6, stride=6),
               Linear("ip", 3)], input_shape=(1, 8, 8), dtype=np.float32, seed=0)
    net.params["conv"]["weight"][...] = np.random.default_rng(0).standard_normal((2, 1, 3, 3))
    net.params["conv"]["bias"][...] = 0
    net.params["ip"]["weight"][...] = [[0, 0], [0, 0], [4.0, 0]]
    net.params["ip"]["bias"][...] = [11.0, 10.0, 0.0]
    return net


def test_adversarial_patch_makes_the_target_class():
    net = detector_net()
    x = np.random.default_rng(0).uniform(0, 1, (64, 1, 8, 8)).astype(np.float32)
    target = 2
    assert (net.predict(x) == 0).all()
    patch = adversarial_patch(net, x[:32], target, patch_size=4, steps=60, seed=0)
    assert patch.shape == (1, 4, 4) and patch.dtype == np.float32
    assert patch.min() >= 0 and patch.max() <= 1
    # Evaluated on held-out images at random places, and at every place.
    assert patch_success_rate(net, x[32:], patch, target, seed=9) == 1.0
    corners = np.array([[0, 0], [4, 4], [0, 4], [4, 0]] * 8)
    assert patch_success_rate(net, x[32:], patch, target, locations=corners) == 1.0
    np.testing.assert_array_equal(patch, adversarial_patch(net, x[:32], target, patch_size=4,
                                                           steps=60, seed=0))  # deterministic
    # Fewer steps are not enough, and a random patch does nothing.
    short = adversarial_patch(net, x[:32], target, patch_size=4, steps=5, seed=0)
    assert patch_success_rate(net, x[32:], short, target, seed=9) < 0.5
    random_patch = np.random.default_rng(5).uniform(0, 1, (1, 4, 4))
    assert patch_success_rate(net, x[32:], random_patch, target, seed=9) < 0.2


# ---------------------------------------------------------------------------------------------
# evaluate: the command's evaluation (rows per attack and eps, worst case, files)


def test_evaluate_rows_and_worst_case_with_an_unbounded_attack():
    from robustcnn.attacks.evaluate import evaluate

    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, size=(40, 2))
    y = SWAP_NET.predict(x)
    y[0] = 1 - y[0]  # wrong before any attack: never robust
    result = evaluate(SWAP_NET, x, y, ["fgsm", "DeepFool", "pgd"], [0.05, 0.2], sanity=False)
    assert result["attacks"] == ["fgsm", "deepfool", "pgd-linf"]
    assert [(r["attack"], r["eps"]) for r in result["rows"]] == [
        ("fgsm", 0.05), ("fgsm", 0.2), ("deepfool", None), ("pgd-linf", 0.05), ("pgd-linf", 0.2)]
    assert result["sanity"] == [] and result["sanity_passed"]
    # FGSM and PGD move each coordinate by eps towards the diagonal: fooled where
    # |x0 − x1| < 2 eps. DeepFool (L2, overshoot 1.02) needs ‖δ‖∞ = 1.02 |x0 − x1| / 2, so it
    # counts at radius eps only where that is <= eps.
    gap = np.abs(x[:, 0] - x[:, 1])
    clean = np.arange(40) != 0
    for w, eps in zip(result["worst_case"], [0.05, 0.2]):
        assert w["norm"] == "linf" and w["eps"] == eps
        assert w["attacks"] == ["fgsm", "deepfool", "pgd-linf"]
        robust = clean & (gap > 2 * eps) & (1.02 * gap / 2 > eps)
        assert w["robust_accuracy"] == pytest.approx(robust.mean())
    # Only DeepFool: the worst case is in its own norm, L2, where it needs 1.02 |x0 − x1| / √2.
    only = evaluate(SWAP_NET, x, y, ["deepfool"], [0.1, 0.3], sanity=False)
    for w, eps in zip(only["worst_case"], [0.1, 0.3]):
        assert w["norm"] == "l2"
        robust = clean & (1.02 * gap / np.sqrt(2) > eps * (1 + 1e-6))
        assert w["robust_accuracy"] == pytest.approx(robust.mean())


@pytest.mark.parametrize("attacks,eps,match", [
    (["fgsm", "nope"], [0.1], "unknown attack 'nope'; known: .*fgsm"),
    ([], [0.1], "needs at least one attack"),
    (["fgsm"], [], r"bounded attacks \['fgsm'\] need at least one eps"),
    (["fgsm"], [0.1, -0.1], "every eps must be finite and >= 0"),
    (["bim"], [float("nan")], "every eps must be finite and >= 0"),
    (["bim"], ["x"], "every eps must be finite and >= 0, got 'x'")])
def test_evaluate_bad_arguments(attacks, eps, match):
    from robustcnn.attacks.evaluate import evaluate

    x = np.full((4, 2), 0.5)
    with pytest.raises(ValueError, match=match):
        evaluate(SWAP_NET, x, np.zeros(4, int), attacks, eps)


def test_evaluate_csv_rows_and_plot(tmp_path):
    from robustcnn.attacks.evaluate import CSV_COLUMNS, csv_rows, evaluate, plot_evaluation

    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 1, size=(30, 2))
    y = SWAP_NET.predict(x)
    result = evaluate(SWAP_NET, x, y, ["fgsm", "fgm-l2"], [0.1, 0.3], sanity=False)
    rows = csv_rows(result)
    assert len(rows) == 4 + 4 and all(len(r) == len(CSV_COLUMNS) for r in rows)
    assert [r[:3] for r in rows[4:]] == [["worst case", "linf", 0.1], ["worst case", "linf", 0.3],
                                         ["worst case", "l2", 0.1], ["worst case", "l2", 0.3]]
    path = tmp_path / "plot.png"
    plot_evaluation(result, path, title="swap")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # no temporary file left
