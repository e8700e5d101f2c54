"""bench/attacks.py: a tiny PGD case must agree with torch; the torch PGD it runs."""

import numpy as np
import pytest
from helpers import single_thread

from robustcnn.bench import attacks, dense, pairs
from robustcnn.models.lenet import lenet5


def test_a_tiny_pgd_case_agrees_with_torch(tiny):
    torch = pytest.importorskip("torch")
    case = attacks.pgd_case(batch=4, steps=3)
    assert case.name == "lenet5 PGD-3 Linf eps 0.1 b4" and case.target == 1.0
    # Both sides on one thread: many tiny passes, where waking a thread pool costs more than
    # the work when other processes hold the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with single_thread():
            result = pairs.run_case(case, tiny)
    finally:
        torch.set_num_threads(threads)
    assert result.agrees, result.check
    assert result.check.startswith("ok step 1: same signs as torch on ")
    assert result.ours_s > 0 and result.peer_s > 0
    assert case.flops == 3 * 2 * sum(dense.lenet5_flops(lenet5(), 4))


def test_torch_pgd_stays_in_the_ball_and_the_range():
    torch = pytest.importorskip("torch")
    net = lenet5(seed=1)
    x = np.random.default_rng(1).random((3,) + net.input_shape, dtype=np.float32)
    xt = torch.from_numpy(x)
    adv = attacks.torch_pgd(dense.torch_lenet5(net), xt, torch.tensor([0, 1, 2]), eps=0.1,
                            alpha=0.07, steps=3).numpy()
    delta = np.abs(adv - x)
    assert delta.max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert delta.max() >= 0.1 - 1e-6  # two steps of 0.07 the same way reach the border
    # One step is FGSM: x + alpha · sign(∇ loss), clipped.
    model, labels = dense.torch_lenet5(net), torch.tensor([0, 1, 2])
    xg = xt.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(xg), labels, reduction="sum").backward()
    one = attacks.torch_pgd(model, xt, labels, eps=0.1, alpha=0.07, steps=1).numpy()
    np.testing.assert_allclose(one, np.clip(x + 0.07 * np.sign(xg.grad.numpy()), 0, 1), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# AutoAttack and Square against torchattacks (rows produced; no timing asserted)


def test_the_ensemble_suite_is_planned_at_the_issues_sizes():
    from robustcnn.bench import cli

    assert attacks.ENSEMBLE_SUITE in cli.SUITES
    plan = attacks.ENSEMBLE_SUITE.plan
    assert plan(cli.parse_args(["--quick"]))[0] == 200
    assert plan(cli.parse_args([]))[0] == 1000
    assert plan(cli.parse_args(["--formats"])) is None
    assert plan(cli.parse_args(["--cases", "conv"])) is None
    assert plan(cli.parse_args(["--cases", "Square"])) is not None


def test_ensemble_rows_are_produced_side_by_side(capsys):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchattacks")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with single_thread():
            rows = attacks.run_ensemble(8, dict(points=3, n_queries=20), n_iter=3,
                                        n_queries=20, train_images=64)
    finally:
        torch.set_num_threads(threads)
    aa, sq = rows
    assert aa["case"].startswith("AutoAttack standard Linf eps 0.1") and "8 images" in aa["case"]
    assert sq["case"].startswith("Square Linf eps 0.1, 20 queries") and sq["unit"] == "queries/s"
    for r in rows:
        assert not r["failure"]
        assert r["ours_s"] > 0 and r["peer_s"] > 0 and r["ours_rate"] > 0 and r["peer_rate"] > 0
        assert 0 <= r["ours_robust"] <= 1 and 0 <= r["peer_robust"] <= 1
    attacks.ENSEMBLE_SUITE.report(rows, None, None)
    out = capsys.readouterr().out
    assert "torchattacks/ours" in out and aa["case"] in out and sq["case"] in out
    targets = attacks.ENSEMBLE_SUITE.targets(rows)
    assert [t[0].split(":")[0] for t in targets] == [aa["case"], sq["case"]]
    assert all(t[2] in ("PASS", "FALL SHORT") for t in targets)
    records = attacks.ENSEMBLE_SUITE.records(rows)
    assert [r["case"] for r in records] == [aa["case"], sq["case"]]
    assert records[0]["ratio"] == pytest.approx(aa["peer_s"] / aa["ours_s"])
    assert records[1]["ratio"] == pytest.approx(sq["ours_rate"] / sq["peer_rate"])
    for r, record in zip(rows, records):
        assert r["ours_cpu_s"] > 0 and r["peer_cpu_s"] > 0 and r["threads"] == 1
        assert r["basis"] in ("wall", "cpu") and record["basis"] == r["basis"]
        assert record["ours_cpu_s"] == r["ours_cpu_s"] and record["peer_cpu_s"] == r["peer_cpu_s"]
    assert records[0]["cpu_ratio"] == pytest.approx(aa["peer_cpu_s"] / aa["ours_cpu_s"])
    assert records[1]["cpu_ratio"] == pytest.approx(sq["ours_cpu_rate"] / sq["peer_cpu_rate"])


def test_the_ratio_is_judged_on_cpu_time_when_others_take_the_idle_cores():
    # 2 CPUs: one thread leaves one idle, so one busy process beside it does not count.
    assert attacks.ratio_basis((0.9, 0.1), threads=1, cpus=2) == "wall"
    assert attacks.ratio_basis((0.1, 1.6), threads=1, cpus=2) == "cpu"
    assert attacks.ratio_basis((0.6, 0.0), threads=2, cpus=2) == "cpu"
    assert attacks.ratio_basis((0.1, 0.2), threads=2, cpus=2) == "wall"
    assert attacks.ratio_basis((None, None), threads=2, cpus=2) == "wall"


def _row(unit, ours_s, peer_s, ours_cpu_s, peer_cpu_s, basis, count=100.0):
    return dict(case=f"case {unit}", unit=unit, target=1.5, failure="", ours_s=ours_s,
                peer_s=peer_s, ours_cpu_s=ours_cpu_s, peer_cpu_s=peer_cpu_s,
                ours_rate=count / ours_s, peer_rate=count / peer_s,
                ours_cpu_rate=count / ours_cpu_s, peer_cpu_rate=count / peer_cpu_s,
                ours_robust=0.5, peer_robust=0.5, ours_background=0.0, peer_background=0.0,
                ours_load=1.0, peer_load=1.0, threads=1, basis=basis)


def test_targets_and_records_follow_the_rows_basis():
    # Wall time says 1.0x (a loaded peer side would look slower); CPU time says 2.0x.
    rows = [_row("img/s", 10.0, 10.0, 5.0, 10.0, "cpu"),
            _row("queries/s", 10.0, 10.0, 5.0, 10.0, "wall")]
    targets = attacks.ENSEMBLE_SUITE.targets(rows)
    assert targets[0][2] == "PASS" and "on CPU time" in targets[0][1]
    assert targets[1][2] == "FALL SHORT" and "on wall time" in targets[1][1]
    records = attacks.ENSEMBLE_SUITE.records(rows)
    assert [r["ratio"] for r in records] == pytest.approx([1.0, 1.0])
    assert [r["cpu_ratio"] for r in records] == pytest.approx([2.0, 2.0])
    assert [r["judged_ratio"] for r in records] == pytest.approx([2.0, 1.0])


def test_robust_share_measures_the_move_in_the_attacks_norm():
    x = np.zeros((2, 4), np.float32)
    adv = np.array([[0.05, 0.05, 0.05, 0.05], [0.5, 0, 0, 0]], np.float32)
    always_wrong = lambda a: np.ones(len(a), dtype=np.int64)  # noqa: E731
    y = np.zeros(2, dtype=np.int64)
    # Both fool the net; a move past eps does not count. L∞: 0.05 and 0.5; L2: 0.1 and 0.5.
    assert attacks._robust(always_wrong, x, adv, y, 0.1, "linf") == pytest.approx(0.5)
    assert attacks._robust(always_wrong, x, adv, y, 0.2, "l2") == pytest.approx(0.5)
    assert attacks._robust(always_wrong, x, adv, y, 0.6, "l2") == pytest.approx(0.0)


def test_torchattacks_members_take_the_authors_settings():
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchattacks")
    model = dense.torch_lenet5(lenet5(seed=2))
    members = attacks.torchattacks_attacks(model, "linf", 0.1, 10)
    assert members["apgd-ce"].steps == 100 and members["apgd-t"].n_target_classes == 9
    assert members["square"].n_queries == 5000 and members["square"].p_init == 0.8
    assert len(members["autoattack"].attacks) == 4
    del torch
