"""study/report/'s figures and write_report on a database of synthetic rows (no training)."""

import math
import os
import subprocess
import sys

import pytest

from robustcnn.study.report import FIGURES, PLOT_NOTE, write_report
from robustcnn.study.store import Store

PNG = b"\x89PNG\r\n\x1a\n"
# (model, kind, file bytes, clean accuracy, fgsm accuracy at eps 0.05, 0.1, 0.2)
MODELS = [("dense", "dense", 40000, 0.95, (0.7, 0.5, 0.2)),
          ("dc", "compressed", 1000, 0.94, (0.72, 0.55, 0.25)),
          ("tiny", "compact", 1100, 0.90, (0.6, 0.4, 0.1)),
          ("student", "distilled", 1200, 0.91, (0.65, 0.45, 0.15)),
          ("lr", "lowrank", 8000, 0.93, (0.75, 0.6, 0.3)),
          ("odd", "some-new-kind", 500, 0.5, (0.3, 0.2, 0.1))]


def _row(model, kind, size, seed, attack, eps, clean, adv, **extra):
    row = {"key": f"{model}|{attack}|{eps}|{seed}", "study": "fig", "model": model,
           "model_key": model, "kind": kind, "arch": "a", "attack": attack, "norm": "linf",
           "eps": eps, "seed": seed, "examples": 100, "clean_accuracy": clean,
           "adversarial_accuracy": adv, "success_rate": None if adv is None else 1 - adv / clean,
           "sanity_passed": True,
           "sanity": [{"name": "large_eps", "passed": True, "detail": ""}],
           "model_info": {"params": 10000, "dense_bytes": 40000, "file_bytes": size,
                          "compression_ratio": 40000 / size},
           "versions": {"robustcnn": "0", "numpy": "1", "numba": "2", "python": "3"}}
    return {**row, **extra}


def _database(path):
    with Store(path) as store:
        for model, kind, size, clean, accs in MODELS:
            for seed, shift in ((0, 0.0), (1, 0.02)):
                for eps, acc in zip((0.05, 0.1, 0.2), accs):
                    store.write_cell(_row(model, kind, size, seed, "fgsm", eps, clean,
                                          acc + shift))
                store.write_cell(_row(model, kind, size, seed, "transfer:fgsm<-dense", 0.1,
                                      clean, accs[1] + 0.1))
                store.write_cell(_row(model, kind, size, seed, "deepfool", math.nan, clean, 0.0,
                                      norm="l2", metrics={"l2_median": 0.4 + 0.01 * size / 1000,
                                                          "success_rate": 1.0}))
                store.write_cell(_row(model, kind, size, seed, "sanity", math.nan, clean, None,
                                      sanity_passed=model != "odd",
                                      sanity=[{"name": "noise_vs_attack",
                                               "passed": model != "odd", "detail": ""}]))
    return path


def test_figures_are_pngs_and_the_report_embeds_them(tmp_path):
    pytest.importorskip("matplotlib")
    db = _database(tmp_path / "study.sqlite")
    out = tmp_path / "report"
    paths = write_report(str(db), str(out))
    assert [os.path.basename(p) for p in paths] == ["cells.csv", "report.md", *FIGURES]
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in paths)  # no temp files
    for p in paths[2:]:
        data = open(p, "rb").read()
        assert len(data) > 1000 and data.startswith(PNG)
        from PIL import Image

        with Image.open(p) as im:
            im.verify()
    md = open(paths[1]).read()
    for name in FIGURES:
        assert f"]({name})" in md
    assert PLOT_NOTE not in md and "Figures are not drawn yet" not in md
    # At fgsm eps 0.1 (the middle of the grid), mean over seeds: odd 500 B 21%, dc 1000 B 56%,
    # lr 8000 B 61%; tiny, student and dense are dominated (dc is smaller and more robust).
    pareto = md.split("## Pareto front")[1].split("## Headline")[0]
    front = [line for line in pareto.splitlines() if line.startswith("| fgsm ε=0.1 |")]
    assert [line.split(" | ")[1] for line in front] == ["odd (sanity check failed)", "dc", "lr"]
    assert "| transfer:fgsm<-dense ε=0.1 | odd (sanity check failed) |" in pareto
    assert "deepfool (unbounded): success / median L2" in md
    assert "- odd seed 0: noise_vs_attack" in md
    assert "- odd fgsm ε=0.2 seed 1: noise_vs_attack (model)" in md
    assert "| sanity" not in md and "sanity ε" not in md


def test_without_matplotlib_the_csv_and_markdown_are_written(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    db = _database(tmp_path / "study.sqlite")
    paths = write_report(str(db), str(tmp_path / "report"))
    assert [os.path.basename(p) for p in paths] == ["cells.csv", "report.md"]
    assert sorted(os.listdir(tmp_path / "report")) == ["cells.csv", "report.md"]
    md = open(paths[1]).read()
    assert PLOT_NOTE in md and "![" not in md
    assert open(paths[0]).read().count("\n") == 1 + 2 * 6 * 6


def test_importing_the_package_does_not_import_matplotlib():
    code = ("import sys, robustcnn, robustcnn.study.report, robustcnn.cli; "
            "sys.exit('matplotlib' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
