"""study/runner.py and report/: the tiny grid end to end, determinism, model reuse, and the
``study`` / ``report`` commands."""

import copy
import os

import numpy as np
import pytest
from study_helpers import tiny_config

from robustcnn.study.config import parse_config
from robustcnn.study.report import write_report
from robustcnn.study.runner import run_study
from robustcnn.study.store import Store

# What may differ between two runs of the same cell: wall-clock times.
TIMINGS = ("seconds", "started", "finished")


def _rows(db):
    with Store(db) as store:
        return store.rows()


def test_same_seed_gives_identical_rows(tiny_mnist, tmp_path):
    study = parse_config(tiny_config(tiny_mnist))
    a = run_study(study, tmp_path / "a" / "db.sqlite", progress=False, log=lambda s: None)
    b = run_study(study, tmp_path / "b" / "db.sqlite", progress=False, log=lambda s: None)
    assert a["written"] == b["written"] == 12
    rows_a, rows_b = _rows(tmp_path / "a" / "db.sqlite"), _rows(tmp_path / "b" / "db.sqlite")
    strip = [[{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]
             for rows in (rows_a, rows_b)]
    # Reproducibility means bit-identical metrics, so exact equality is the test here.
    assert strip[0] == strip[1]
    # ... and the rows are not all alike: the cells measured different things.
    assert len({r["adversarial_accuracy"] for r in rows_a}) > 1
    assert {r["kind"] for r in rows_a} == {"dense", "compressed", "compact"}

    other = parse_config(tiny_config(tiny_mnist, seeds=(1,)))
    run_study(other, tmp_path / "c" / "db.sqlite", progress=False, log=lambda s: None)
    rows_c = _rows(tmp_path / "c" / "db.sqlite")
    assert [r["metrics"] for r in rows_c] != [r["metrics"] for r in rows_a]


def test_tiny_grid_resumes_reuses_models_and_reports(tiny_mnist, tmp_path):
    raw = tiny_config(tiny_mnist, sanity=True)
    study = parse_config(raw)
    db = tmp_path / "db.sqlite"
    lines = []
    first = run_study(study, db, limit=5, progress=False, log=lines.append)
    # 3 models × 2 attacks × 2 eps, and one sanity cell per model
    assert first == {**first, "cells": 15, "written": 5, "remaining": 10, "done_before": 0}
    second = run_study(study, db, progress=False, log=lines.append)
    assert second == {**second, "written": 10, "remaining": 0, "done_before": 5}
    # Every model was built once, even across the two runs (the dense one from its file).
    assert sorted(lines) == ["compressing dense → dc (seed 0)", "training compact (lenet5, "
                             "seed 0)", "training dense (lenet-300-100, seed 0)"]
    assert run_study(study, db, progress=False, log=lines.append)["written"] == 0

    rows = _rows(db)
    assert len(rows) == 15 and len({r["key"] for r in rows}) == 15
    sanity = [r for r in rows if r["attack"] == "sanity"]
    assert sorted(r["model"] for r in sanity) == ["compact", "dc", "dense"]
    for r in sanity:
        assert r["sanity"] and r["sanity_passed"] == all(c["passed"] for c in r["sanity"])
        assert r["examples"] == 16 and r["metrics"]["checked_eps"] == [0.05, 0.2]
    rows = [r for r in rows if r["attack"] != "sanity"]
    for r in rows:
        assert 0 <= r["adversarial_accuracy"] <= 1 and r["examples"] == 32
        assert r["sanity"] is None and r["sanity_passed"] is None
        assert set(r["versions"]) == {"robustcnn", "numpy", "numba", "python"}
        assert r["seconds"] > 0
        # Per image, right or not before and after the attack: the row's accuracies again.
        o = r["outcomes"]
        assert o.images.tolist() == list(range(32))
        assert o.adversarial.mean() == pytest.approx(r["adversarial_accuracy"])
        assert o.clean.mean() == pytest.approx(r["clean_accuracy"])
        assert r["provenance"]["config"] == study.config_hash
        assert r["provenance"]["machine"]["cpus"] == os.cpu_count()
    info = {r["model"]: r["model_info"] for r in rows}
    assert info["dense"]["params"] == 266_610 == info["dc"]["params"]
    assert info["dc"]["compression_ratio"] > 10 > info["dense"]["compression_ratio"]
    # FGSM at eps 0 would leave every clean-correct image correct; at 0.2 it must hurt the
    # dense net's accuracy on this easy data.
    dense = {(r["attack"], r["eps"]): r for r in rows if r["model"] == "dense"}
    assert dense[("fgsm", 0.2)]["adversarial_accuracy"] < dense[("fgsm", 0.2)]["clean_accuracy"]

    # The models are stored (their training checkpoints removed once they are).
    assert sorted(p.suffix for p in (tmp_path / "models").iterdir()) == [".rcnn"] * 3
    # A new eps reuses the three stored models.
    raw2 = copy.deepcopy(raw)
    raw2["attacks"][0]["eps"].append(0.1)
    lines.clear()
    # 3 new FGSM cells, and 3 new sanity cells: they check the study's eps, which changed.
    assert run_study(parse_config(raw2), db, progress=False, log=lines.append)["written"] == 6
    assert lines == []

    csv_path, md_path, *figures = write_report(str(db), str(tmp_path / "report"))
    csv_text, md = open(csv_path).read(), open(md_path).read()
    assert csv_text.count("\n") == 1 + 21
    assert "## Headline: at equal size, compressed vs compact" in md
    assert "### dc (" in md and "fgsm ε=0.2" in md
    assert "## Accuracy with 95% confidence intervals" in md
    assert "### Robust accuracy with 95% intervals and paired tests" in md
    assert "Headline robustness: **pgd-linf**, the strongest attack this study has" in md
    assert "- **dc vs compact**" in md and "McNemar's exact test per seed and eps" in md
    # Two configs ran (the second added an eps): two config hashes, one code version.
    provenance = md[md.index("## Provenance"):]
    assert provenance.count("| tiny: ") == 2 and "one code version" in provenance


def test_study_and_report_commands(tiny_mnist, tmp_path, capsys):
    from robustcnn.cli import main

    raw = tiny_config(tiny_mnist)
    toml = tmp_path / "tiny.toml"
    toml.write_text(_to_toml(raw))
    db = tmp_path / "runs" / "study.sqlite"
    assert main(["study", str(toml), "--db", str(db), "--limit", "2", "--no-progress"]) == 0
    assert "2 cell(s) written, 0 already done, 10 remaining of 12" in capsys.readouterr().out
    assert main(["report", str(db), "-o", str(tmp_path / "rep")]) == 0
    assert "report.md" in capsys.readouterr().out
    assert (tmp_path / "rep" / "cells.csv").read_text().count("\n") == 3
    bad = tmp_path / "bad.toml"
    bad.write_text(_to_toml({**raw, "attacks": [{"name": "laser", "eps": [0.1]}]}))
    assert main(["study", str(bad), "--db", str(db)]) == 2
    assert "attacks[0].name" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.sqlite")]) == 2


def test_demo_command_runs_a_study_and_prints_the_headline(tiny_mnist, tmp_path, capsys):
    """``robustcnn demo`` is ``study`` + ``report`` on the packaged demo grid (here a tiny
    one), ending with the headline table and the report's path; a rerun resumes."""
    from robustcnn.cli import main

    toml = tmp_path / "tiny.toml"
    toml.write_text(_to_toml(tiny_config(tiny_mnist)))
    db = tmp_path / "demo" / "study.sqlite"
    args = ["demo", "--config", str(toml), "--db", str(db), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("## Headline: at equal size, compressed vs compact")
    assert "### dc (" in out and "12 cell(s) run now, 0 found done" in out
    report = tmp_path / "demo" / "report" / "report.md"
    assert f"report: {report}" in out and report.exists()
    assert main(args) == 0
    assert "0 cell(s) run now, 12 found done" in capsys.readouterr().out


def _to_toml(raw):
    """Just enough TOML for tiny_config's dicts."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + " }"
        return repr(v)

    out = []
    for section in ("study", "train"):
        out.append(f"[{section}]")
        out += [f"{k} = {value(v)}" for k, v in raw[section].items()]
    for section in ("models", "attacks"):
        for entry in raw[section]:
            out.append(f"[[{section}]]")
            out += [f"{k} = {value(v)}" for k, v in entry.items()]
    return "\n".join(out) + "\n"


@pytest.mark.slow
def test_tiny_grid_with_a_mobilenet(tiny_mnist, tmp_path):
    study = parse_config(tiny_config(tiny_mnist, compact="mobilenet_small", sanity=True))
    assert run_study(study, tmp_path / "db.sqlite", progress=False,
                     log=lambda s: None)["written"] == 15


def test_every_model_kind_and_attack_form_runs(tiny_mnist, tmp_path):
    """The grid with each kind of model (adversarially trained, adversarial-aware compression,
    a target ratio, compress-then-adversarially-train, distilled at a parameter count,
    low-rank) and each form of attack (unbounded with thresholds, transfer) on tiny data."""
    raw = tiny_config(tiny_mnist, sanity=False)
    raw["train"]["epochs"] = 1
    fast = {"rounds": 1, "retrain_epochs": 1, "finetune_epochs": 1, "batch_size": 16}
    raw["models"] += [
        {"name": "adv", "kind": "dense", "arch": "lenet-300-100",
         "train": {"adversarial": {"attack": "pgd", "eps": 0.1, "steps": 2}}},
        {"name": "dc-aware", "kind": "compressed", "base": "dense", "preset": "lenet-300-100",
         "settings": {**fast, "adversarial": {"eps": 0.1}}},
        {"name": "adv-then-dc", "kind": "compressed", "base": "adv",
         "preset": "lenet-300-100", "target_ratio": 20, "settings": fast},
        {"name": "dc-then-adv", "kind": "finetuned", "base": "dc",
         "train": {"epochs": 1, "lr": 0.001, "adversarial": {"eps": 0.1, "fraction": 1.0}}},
        {"name": "kd", "kind": "distilled", "arch": "mobilenet_small", "teacher": "dense",
         "params": 4000, "kwargs": {"blocks": 2}, "train": {"epochs": 1}},
        {"name": "low", "kind": "lowrank", "base": "dense", "ratio": 10,
         "train": {"epochs": 1, "lr": 0.01}},
        {"name": "pruned", "kind": "compressed", "base": "dense",
         "settings": {**fast, "kept": {"ip1": 0.1, "ip2": 0.1}}},
        {"name": "quantized", "kind": "compressed", "base": "dense",
         "settings": {**fast, "bits": {"ip1": 4, "ip2": 4, "ip3": 4}}},
    ]
    raw["attacks"] = [{"name": "fgsm", "eps": [0.1]},
                      {"name": "deepfool", "eps": [0.5, 2.0], "options": {"max_iter": 10}},
                      {"name": "cw", "options": {"max_iter": 10, "binary_search_steps": 2},
                       "examples": 12},
                      {"name": "pgd", "eps": [0.1], "source": "dense",
                       "options": {"steps": 5}}]
    study = parse_config(raw)
    db = tmp_path / "db.sqlite"
    lines = []
    result = run_study(study, db, progress=False, log=lines.append)
    assert result["written"] == len(study.cells()) == 11 * 3 + 10
    rows = {(r["model"], r["attack"]): r for r in _rows(db)}
    info = {m: r["model_info"] for (m, _), r in rows.items()}
    assert info["adv-then-dc"]["adversarial"] == "dense"
    assert info["dc-aware"]["adversarial"] == "compressed"
    assert info["dc-then-adv"]["adversarial"] == "finetuned"
    assert info["dc"]["adversarial"] == info["kd"]["adversarial"] == ""
    assert info["dc-aware"]["adversarial_training"] == "fgsm ε=0.1, 50% of each batch"
    # An attack's own image count: C&W on the first 12 of the 32 test images.
    assert {r["examples"] for (_, a), r in rows.items() if a == "cw-l2"} == {12}
    assert {r["examples"] for (_, a), r in rows.items() if a == "fgsm"} == {32}
    # The compressed sizes follow their settings: the target ratio is about reached.
    assert 10 < info["adv-then-dc"]["compression_ratio"] < 40
    assert info["dc-then-adv"]["file_bytes"] == pytest.approx(info["dc"]["file_bytes"], rel=0.05)
    assert info["low"]["params"] < info["dense"]["params"] / 5
    # Pruning alone (CSR-sized) and quantization alone (4-bit codes, no pruning) both shrink
    # the file, quantization by about 32 / 4.
    assert 1 < info["pruned"]["compression_ratio"] < info["dc"]["compression_ratio"]
    assert 5 < info["quantized"]["compression_ratio"] < 9
    # The student was built at the width that gives it about 4,000 parameters.
    assert info["kd"]["params"] == pytest.approx(4000, rel=0.1)
    for (model, attack), r in rows.items():
        if attack in ("deepfool", "cw-l2"):
            assert r["eps"] != r["eps"]  # NaN: no radius
            m = r["metrics"]
            # Each image's perturbation size is stored (schema 4): the median of the fooled
            # ones' is the row's.
            o = r["outcomes"]
            fooled = o.clean & ~o.adversarial
            assert o.sizes is not None and len(o.sizes) == r["examples"]
            if fooled.any():
                assert float(np.median(o.sizes[fooled])) == pytest.approx(
                    m["size_median_fooled"], rel=1e-6)
        elif r["outcomes"] is not None:
            assert r["outcomes"].sizes is None
            if attack == "deepfool":
                assert m["options"] == {"max_iter": 10}  # what the study file set, kept
                within = m["accuracy_within"]
                # A larger radius admits more of the perturbations found.
                assert within["2"] <= within["0.5"] + 1e-12
                assert r["adversarial_accuracy"] <= within["2"] + 1e-12
        if attack == "transfer:pgd-linf<-dense":
            assert model != "dense" and r["metrics"]["source"] == "dense"
            # Measured on the target: its clean accuracy is its own.
            assert r["clean_accuracy"] == rows[(model, "fgsm")]["clean_accuracy"]
    assert ("dense", "transfer:pgd-linf<-dense") not in rows
    md = open(write_report(str(db), str(tmp_path / "report"))[1]).read()
    assert "## Adversarial-aware compression" in md and "adversarial-aware compression" in md


def test_a_partial_run_reports_what_is_missing_and_the_csv_agrees(tiny_mnist, tmp_path):
    """Issue 15 point 8: after ``study --limit`` the report says how many of the planned cells
    ran and that the sanity cells are still to run (not "study.sanity = false"); once all ran,
    every attack row of cells.csv carries the sanity verdict report.md gives it."""
    import csv

    raw = tiny_config(tiny_mnist, sanity=True)
    raw["models"] = raw["models"][:1]
    raw["attacks"] = raw["attacks"][:1]
    study = parse_config(raw)
    assert len(study.cells()) == 3  # fgsm at two eps, the sanity cell
    db = tmp_path / "db.sqlite"
    run_study(study, db, limit=1, progress=False, log=lambda s: None)
    md = open(write_report(str(db), str(tmp_path / "r1"))[1]).read()
    assert "1 attack cells" in md and "1 of the 3 cells planned: 2 still to run" in md
    assert "study.sanity = false" not in md and "Not run yet" in md
    run_study(study, db, progress=False, log=lambda s: None)
    paths = write_report(str(db), str(tmp_path / "r2"))
    md = open(paths[1]).read()
    assert "2 attack cells and 1 model sanity cells (all 3 cells planned)" in md
    with open(paths[0]) as f:
        rows = list(csv.DictReader(f))
    verdict = [r["sanity_passed"] for r in rows if r["attack"] == "sanity"]
    assert len(verdict) == 1 and verdict[0] in ("True", "False")
    attack_rows = [r for r in rows if r["attack"] != "sanity"]
    assert len(attack_rows) == 2 and all(r["sanity_passed"] == verdict[0] for r in attack_rows)
    if verdict[0] == "True":
        assert "Every cell's sanity checks passed." in md
