"""study/estimate.py: the grid's CPU time estimated from a calibration, against the measured time
of a tiny study; the work model of attacks and builds; the study bar weighed by the estimate."""

import math

import numpy as np
import pytest
from study_helpers import tiny_config

from robustcnn.attacks.sanity import sanity_runs, sanity_work
from robustcnn.study import estimate as est
from robustcnn.study.config import SANITY, parse_config
from robustcnn.study.runner import run_cells, run_study
from robustcnn.study.store import Store

# --- the work model ------------------------------------------------------------------------


def test_attack_passes_follow_the_attacks_iterations():
    passes = est.attack_passes
    assert passes("fgsm", 0.1, {}, 10) == (1, 0, False)
    assert passes("noise", 0.1, {}, 10) == (0, 0, False)
    assert passes("pgd", 0.1, {}, 10) == (40, 0, False)  # PGD-40, its default
    assert passes("pgd", 0.1, {"steps": 7, "restarts": 3}, 10) == (21, 0, False)
    # BIM's steps from Kurakin et al.'s rule: ceil(min(e + 4, 1.25 e)) at e = eps · 255.
    assert passes("bim", 0.1, {}, 10) == (math.ceil(min(25.5 + 4, 1.25 * 25.5)), 0, False)
    assert passes("apgd-t", 0.1, {}, 10) == (900, 0, True)  # 100 iterations × 9 targets
    assert passes("apgd-t", 0.1, {}, 3)[0] == 200  # only 2 other classes
    assert passes("deepfool", None, {}, 10) == (est.DEEPFOOL_ITERATIONS * 10, 0, False)
    grads, forwards, bound = passes("autoattack", 0.1, {}, 10)
    assert bound and forwards == 5000 and grads == 100 + 900 + 2 * 900
    assert passes("square", 0.1, {"n_queries": 100}, 10) == (0, 100, True)
    assert passes("spsa", 0.1, {"steps": 10, "samples": 8}, 10) == (0, 160, False)


def test_sanity_runs_are_what_sanity_work_counts():
    from robustcnn.models.lenet import lenet_300_100

    net = lenet_300_100()
    x = np.zeros((40, 1, 28, 28), np.float32)
    y = np.zeros(40, np.int64)
    runs = sanity_runs(40, [0.05, 0.2], subset=30)
    assert {a for a, _, _ in runs} >= {"fgsm", "pgd-linf", "noise-linf"}
    assert sanity_work(net, x, y, {}, [0.05, 0.2], subset=30) == 40 + sum(n for *_, n in runs)


def test_cost_per_example_includes_the_share_of_the_call():
    cost = est.Cost(call=0.1, example=0.001)
    assert cost.per_example(100) == pytest.approx(0.002)
    assert cost.per_example(1) == pytest.approx(0.101)


def test_build_and_cell_seconds_scale_with_their_work(tiny_mnist):
    raw = tiny_config(tiny_mnist, sanity=True)
    raw["models"][0]["train"] = {"epochs": 4, "adversarial": {"attack": "pgd", "eps": 0.1,
                                                               "fraction": 0.5, "steps": 3}}
    study = parse_config(raw)
    unit = est.Timing(train=1.0, grad=0.1, forward=0.01)
    timings = {m.name: unit for m in study.models}
    # 4 epochs of 100 images: a training pass each, and half of them 3 PGD steps.
    assert est.build_seconds(study, "dense", 100, timings) == pytest.approx(
        4 * 100 * (1.0 + 0.5 * 3 * 0.1))
    # Deep Compression: 1 round × 1 retraining epoch + 1 fine-tuning epoch.
    assert est.build_seconds(study, "dc", 100, timings) == pytest.approx(2 * 100 * 1.0)
    cells = {(c.model, c.attack, c.eps): c for c in study.cells()}
    pgd, _ = est.cell_seconds(study, cells[("dense", "pgd-linf", 0.05)], 50, timings)
    assert pgd == pytest.approx(50 * (40 * 0.1 + 2 * 0.01))
    fgsm, _ = est.cell_seconds(study, cells[("dense", "fgsm", 0.05)], 50, timings)
    assert fgsm == pytest.approx(50 * (0.1 + 2 * 0.01))
    sanity, _ = est.cell_seconds(study, cells[("dense", SANITY, None)], 50, timings)
    assert sanity > pgd  # PGD at every eps, and more


# --- against the measured time -------------------------------------------------------------


def test_estimate_is_the_right_order_of_magnitude(tiny_mnist, tmp_path):
    # A unit error (milliseconds for seconds, a batch's time as an example's, a forgotten
    # factor of the epochs or the images) is off by 16x or more; the bounds leave 10x for the
    # load of the machine, which the calibration sees as the run does.
    study = parse_config(tiny_config(tiny_mnist, sanity=True))
    # A first run compiles what a fresh checkout has not (the compressed formats' kernels,
    # which the calibration of dense nets does not touch); the second is the one compared.
    run_study(study, tmp_path / "warm" / "db.sqlite", progress=False, log=lambda s: None)
    lines = []
    result = run_study(study, tmp_path / "db.sqlite", progress=False, log=lines.append,
                       estimate=True)
    assert result["written"] == 15
    estimated, measured = result["estimated_seconds"], result["seconds"]
    assert measured / 10 < estimated < measured * 10, (estimated, measured, lines)
    # The attack cells alone, against their rows' own times.
    with Store(tmp_path / "db.sqlite") as store:
        rows = store.rows()
    cells_measured = sum(r["seconds"] for r in rows)
    items = [(study.cell_key(c), c) for c in study.cells()]
    from robustcnn.study.data import load_data

    again = est.estimate_grid(study, items, load_data(study))
    cells_estimated = sum(again.cells.values())
    assert cells_measured / 10 < cells_estimated < cells_measured * 10, \
        (cells_estimated, cells_measured)
    # What was printed: the total, the builds and each kind of cell.
    assert lines[0].startswith("estimated time of the 15 cell(s) to run on this machine: ")
    assert "building 3 model(s)" in lines[1]
    assert {line.split(":")[0].strip() for line in lines[2:5]} == {"fgsm", "pgd-linf",
                                                                   "sanity checks"}


def test_models_in_the_database_cost_nothing(tiny_mnist, tmp_path):
    study = parse_config(tiny_config(tiny_mnist))
    db = tmp_path / "db.sqlite"
    run_study(study, db, limit=1, progress=False, log=lambda s: None)  # builds "dense"
    items = [(study.cell_key(c), c) for c in study.cells()]
    from robustcnn.study.data import load_data

    with Store(db) as store:
        found = est.estimate_grid(study, items, load_data(study), stored=lambda n, s: (
            store.artifact(study.model_key(n, s)) is not None))
    assert set(found.builds) == {("dc", 0), ("compact", 0)}
    # Each build is charged to the first cell that needs it.
    per_cell = found.per_cell(study, items)
    first_dc = next(k for k, c in items if c.model == "dc")
    assert per_cell[first_dc] == pytest.approx(found.cells[first_dc] + found.builds[("dc", 0)])
    assert sum(per_cell.values()) == pytest.approx(found.total)


# --- the progress bar ----------------------------------------------------------------------


def test_the_study_bar_counts_estimated_seconds_and_shows_each_cells(tmp_path, capsys):
    with Store(tmp_path / "db.sqlite") as store:
        items = [(f"k{i}", f"cell {i}") for i in range(3)]
        weights = {"k0": 1.0, "k1": 100.0, "k2": 10.0}
        written = run_cells(store, items, lambda c: _row(c), progress=True, weights=weights)
    assert written == 3
    err = capsys.readouterr().err
    assert "111/111 s of estimated work" in err
    assert "cell 3/3: cell 2, est. 10 s" in err  # (tqdm may skip drawing the others)


def _row(cell):
    return {"study": "t", "model": "m", "model_key": "k", "attack": "fgsm",
            "eps": float(cell.split()[-1]) / 10, "seed": 0, "adversarial_accuracy": 0.5,
            "metrics": {}}
