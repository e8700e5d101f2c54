"""The report's statistics on hand-made rows with per-image outcomes: the headline attack
(AutoAttack, else the strongest named), each cell's intervals, McNemar per seed, the tests
across seeds and cells, the sentences drawn from them, and cells reported apart."""

import re

import numpy as np
import pytest
from scipy import stats as sp

from robustcnn.study.report import markdown, summarise
from robustcnn.study.report.inference import cell_interval, headline_attack
from robustcnn.study.store import Outcomes

N = 200  # images per cell


def _flags(right, wrong_first=0):
    """N flags with ``right`` of them True, the first ``wrong_first`` False."""
    out = np.zeros(N, bool)
    out[wrong_first:wrong_first + right] = True
    return out


def _row(model, kind, seed, attack, eps, adv, *, size, clean=None, sanity=True,
         outcomes=True):
    clean = _flags(180) if clean is None else clean
    return {"key": f"{model}-{seed}-{attack}-{eps}", "study": "t", "model": model,
            "kind": kind, "arch": "a", "attack": attack, "norm": "linf", "eps": eps,
            "seed": seed, "examples": N, "clean_accuracy": float(clean.mean()),
            "adversarial_accuracy": float(adv.mean()), "success_rate": 0.0, "linf_mean": eps,
            "l2_mean": 1.0, "sanity_passed": sanity,
            "sanity": [{"name": "gradient_masking", "passed": sanity, "detail": ""}],
            "model_info": {"params": 1000, "file_bytes": size, "compression_ratio": 4000 / size},
            "versions": {"robustcnn": "0", "numpy": "1", "numba": "2", "python": "3"},
            "outcomes": Outcomes(np.arange(N), clean, adv) if outcomes else None}


def _grid(attacks, seeds=(0, 1, 2), *, gain=10, **kw):
    """dc (compressed) right on ``gain`` more images than small (compact) in every cell:
    dc right on the first 60 + gain + 5·seed images, small on the first 60 + 5·seed and on
    3 images dc gets wrong."""
    rows = []
    for seed in seeds:
        for attack in attacks:
            for eps in (0.1, 0.2):
                base = 60 + 5 * seed - int(100 * eps)
                dc = _flags(base + gain + 3)
                small = _flags(base)
                small[N - 3:] = True  # 3 images only the compact model gets right
                rows += [_row("dc", "compressed", seed, attack, eps, dc, size=100, **kw),
                         _row("small", "compact", seed, attack, eps, small, size=110, **kw)]
    return rows


def _table_row(md, *cells):
    pattern = r"^\| " + r" \| ".join(re.escape(c) for c in cells) + r" \|.*$"
    found = re.search(pattern, md, re.M)
    assert found, f"no table row starting {cells}"
    return [c.strip() for c in found.group(0).strip("|").split("|")]


def test_autoattack_heads_and_mcnemar_is_per_seed_on_the_same_images():
    rows = _grid(["autoattack-linf", "fgsm"])
    models, columns = summarise(rows)
    assert headline_attack(models, columns) == ("autoattack-linf", "autoattack")
    md = markdown(rows)
    assert "Headline robustness: **autoattack-linf**, AutoAttack's standard evaluation" in md
    assert "fgsm are secondary rows" in md
    row = _table_row(md, "dc", "small", "autoattack-linf ε=0.1")
    # dc alone right on 13 images, small alone on 3: McNemar's exact p, every seed.
    p = sp.binomtest(13, 16, 0.5).pvalue
    assert row[6] == "; ".join(f"s{s}: {p:.3f} (13/3)" for s in (0, 1, 2))
    assert row[5] == "+5.00"  # (13 − 3) / 200
    # The across-seeds Wilcoxon of three equal positive differences: 2/2³.
    assert row[7] == "0.250 (not significant)"
    assert _table_row(md, "dc", "small", "fgsm ε=0.2 (secondary)")


def test_the_sentence_says_significant_or_not_from_the_wilcoxon_p():
    # 3 seeds × 2 eps, all six differences positive: exact two-sided p = 2/2⁶ < 0.05.
    md = markdown(_grid(["autoattack-linf"]))
    sentence = next(line for line in md.splitlines() if line.startswith("- **dc vs small**"))
    assert "over 3 seed(s) × 2 eps = 6 pairs (6 higher, 0 lower, 0 tied)" in sentence
    assert f"Wilcoxon signed-rank p = {2 / 64:.3f}" in sentence
    assert "**significant** across seeds and cells: the compressed model is more robust" in sentence
    assert "compressed significantly more robust in 6, compact in 0, of 6" in sentence
    # One seed: two pairs, p cannot go below 0.5 — not significant, and said why.
    md = markdown(_grid(["autoattack-linf"], seeds=(0,)))
    sentence = next(line for line in md.splitlines() if line.startswith("- **dc vs small**"))
    assert "**not significant** across seeds and cells (p ≥ 0.05)" in sentence
    assert "with 2 non-zero pair(s) the test cannot go below p = 0.5" in sentence
    # The other way round: the compact model right on 3 more images in every cell.
    md = markdown(_grid(["autoattack-linf"], gain=-3))
    assert "(0 higher, 6 lower, 0 tied)" in md
    assert "**significant** across seeds and cells: the compact model is more robust" in md
    # No difference at all: the compact model right exactly where dc is.
    rows = _grid(["autoattack-linf"])
    dc = {(r["seed"], r["eps"]): r for r in rows if r["model"] == "dc"}
    rows = [r if r["model"] == "dc" else {**dc[(r["seed"], r["eps"])], **{
        k: r[k] for k in ("key", "model", "kind", "model_info")}} for r in rows]
    md = markdown(rows)
    assert "**not significant**" in md and "(0 higher, 0 lower, 6 tied)" in md
    assert "s0: 1.000 (0/0)" in md


def test_without_autoattack_the_strongest_attack_heads_and_is_named():
    rows = _grid(["fgsm"]) + [dict(r, attack="pgd", key=r["key"] + "pgd",
                                   adversarial_accuracy=r["adversarial_accuracy"] / 2,
                                   outcomes=None) for r in _grid(["fgsm"])]
    models, columns = summarise(rows)
    assert headline_attack(models, columns) == ("pgd", "strongest")
    md = markdown(rows)
    assert "Headline robustness: **pgd**, the strongest attack this study has" in md
    # pgd's cells have no per-image outcomes: no McNemar, said so.
    assert _table_row(md, "dc", "small", "pgd ε=0.1")[6] == "s0: –; s1: –; s2: –"
    # Transfer attacks never head, however low their accuracy.
    rows += [dict(r, attack="transfer:fgsm<-dense", key=r["key"] + "t",
                  adversarial_accuracy=0.0) for r in _grid(["fgsm"])]
    assert headline_attack(*summarise(rows)) == ("pgd", "strongest")


def test_cell_intervals_over_seeds_and_over_images():
    rows = _grid(["fgsm"])
    models, _ = summarise(rows)
    iv = cell_interval(models["dc"], ("fgsm", 0.1))
    values = [(60 + 5 * s - 10 + 13) / N for s in (0, 1, 2)]
    low, high = sp.t.interval(0.95, 2, loc=np.mean(values), scale=sp.sem(values))
    assert iv["seeds"] == 3 and (iv["t"].low, iv["t"].high) == pytest.approx((low, high))
    # Over images: the per-image share of seeds right has the cell's mean; the interval
    # brackets it and is about ±1.96·√(p(1−p)/n) wide at most.
    b_low, b_high = iv["bootstrap"]
    assert b_low < np.mean(values) < b_high and iv["images"] == N
    assert b_high - b_low < 2 * 1.96 * 0.5 / np.sqrt(N) + 0.01
    md = markdown(rows)
    assert f"| dc | fgsm ε=0.1 | 3 | {100 * np.mean(values):.2f} | [{100 * low:.2f}, " \
           f"{100 * high:.2f}] | [{100 * b_low:.2f}, {100 * b_high:.2f}] ({N} images) |" in md
    # One seed: no interval over seeds; the headline's interval is the bootstrap, marked *.
    md = markdown(_grid(["fgsm"], seeds=(0,)))
    assert "| dc | fgsm ε=0.1 | 1 | " in md and "– (one seed)" in md
    assert re.search(r"\| dc \| small \| fgsm ε=0\.1 \| [0-9.]+ \[[0-9.]+, [0-9.]+\]\* \|", md)
    assert "at most 3.54 pp at n = 200 images (95%: ±6.93 pp)" in md


def test_cells_without_per_image_data_and_flagged_cells_are_reported_apart():
    md = markdown(_grid(["fgsm"], outcomes=False))
    assert "– (no per-image data)" in md and "results schema version 2" in md
    assert "No per-image data for McNemar's test." in md
    rows = _grid(["fgsm"])
    for r in rows:  # small's gradient-masking check fails at eps 0.2, seed 1
        if r["model"] == "small" and r["eps"] == 0.2 and r["seed"] == 1:
            r["sanity_passed"] = False
            r["sanity"] = [{"name": "gradient_masking", "passed": False, "detail": ""}]
    md = markdown(rows)
    apart = md[md.index("Reported apart"):]
    assert _table_row(apart, "dc", "small", "fgsm ε=0.2")[-1] == "small"
    # Counted: the eps 0.1 cells only, 3 seeds.
    assert "over 3 seed(s) × 1 eps = 3 pairs" in md


def test_an_unbounded_attack_is_a_secondary_row_at_its_radii():
    rows = _grid(["autoattack-linf"], seeds=(0, 1))
    for seed, (va, vb) in enumerate(((0.40, 0.30), (0.50, 0.20))):
        for model, kind, size, v in (("dc", "compressed", 100, va), ("small", "compact", 110, vb)):
            rows.append(dict(_row(model, kind, seed, "deepfool", None, np.zeros(N, bool),
                                  size=size), metrics={"accuracy_within": {"0.5": v}},
                             key=f"{model}-{seed}-deepfool"))
    md = markdown(rows)
    row = _table_row(md, "dc", "small", "deepfool within ε=0.5 (secondary)")
    low, high = sp.t.interval(0.95, 1, loc=0.45, scale=sp.sem([0.4, 0.5]))
    assert row[3] == f"45.00 [{100 * max(low, 0):.2f}, {100 * min(high, 1):.2f}]"
    assert row[5] == "+20.00" and row[6] == "– (sizes per image not stored)"


def test_the_csv_carries_code_version_and_config_hash():
    from robustcnn.study.report import csv_text

    row = _grid(["fgsm"], seeds=(0,))[0]
    row["provenance"] = {"config": "cd" * 32, "code": {"version": "0.1.0", "commit": "ab" * 20}}
    lines = csv_text([row, dict(row, key="other", provenance=None)]).splitlines()
    assert lines[0].endswith(",key,code_version,config_hash")
    assert lines[1].endswith(f",{row['key']},git {'ab' * 6},{'cd' * 32}")
    assert lines[2].endswith(",other,,")


def test_autoattack_run_with_the_studys_options_is_not_called_standard():
    rows = _grid(["autoattack-linf"], seeds=(0,))
    assert "AutoAttack's standard evaluation (the per-image worst case" in markdown(rows)
    for r in rows:
        r["metrics"] = {"options": {"n_iter": 20, "n_queries": 300}}
    md = markdown(rows)
    assert "AutoAttack with the study's options n_iter=20, n_queries=300 (not the standard " \
           "evaluation's budget)" in md and "standard evaluation (the" not in md


def _deepfool_rows(seeds, sizes_of, *, with_sizes=True):
    """dc and small under DeepFool: right on the first 180 clean images, fooled on all but
    the last 10 (dc) or 20 (small); their perturbation sizes per image from ``sizes_of``."""
    rows = []
    for seed in seeds:
        for model, kind, size, robust in (("dc", "compressed", 100, 10), ("small", "compact",
                                                                           110, 20)):
            clean, adv = _flags(180), np.zeros(N, bool)
            adv[N - robust:] = True
            clean[N - robust:] = True
            sizes = sizes_of(model, seed).astype(np.float32)
            row = _row(model, kind, seed, "deepfool", None, adv, size=size, clean=clean)
            row["outcomes"] = Outcomes(np.arange(N), clean, adv,
                                       sizes if with_sizes else None)
            rows.append(dict(row, metrics={"accuracy_within": {"0.5": float(adv.mean())}},
                             key=f"{model}-{seed}-deepfool"))
    return rows


def test_an_unbounded_attacks_radii_are_compared_image_by_image():
    rng = np.random.default_rng(0)
    base = rng.random(N)

    def sizes_of(model, seed):  # dc needs 10% larger perturbations, with noise
        return base * (1.1 if model == "dc" else 1.0) + 0.01 * rng.random(N) + 0.001 * seed

    rows = _grid(["autoattack-linf"], seeds=(0, 1)) + _deepfool_rows((0, 1), sizes_of)
    models, _ = summarise(rows)
    row = _table_row(markdown(rows), "dc", "small", "deepfool radius per image (secondary)")
    for seed in (0, 1):
        o_dc, o_small = (models[m]["outcomes"][("deepfool", None)][seed] for m in ("dc", "small"))
        # By definition: 0 where wrong on the clean image, inf where not fooled, else the size.
        r = {}
        for name, o in (("dc", o_dc), ("small", o_small)):
            r[name] = np.where(~o.clean, 0.0, np.where(o.adversarial, np.inf,
                                                       o.sizes.astype(float)))
        with np.errstate(invalid="ignore"):  # inf − inf, a tie
            d = r["dc"] - r["small"]
        d[np.isinf(r["dc"]) & np.isinf(r["small"])] = 0
        d[np.isinf(d)] = np.sign(d[np.isinf(d)]) * 1e6  # any stand-in above every radius
        d = np.round(d, 12)
        p = sp.wilcoxon(d[d != 0]).pvalue
        assert f"s{seed}: {p:.2g} ({(d > 0).sum()}/{(d < 0).sum()})" in row[6] \
            or f"s{seed}: {p:.3f} ({(d > 0).sum()}/{(d < 0).sum()})" in row[6]
        assert p < 1e-6  # dc's radii are larger on the images both were fooled on
    assert row[3].startswith("median ") and row[7].endswith("(not significant)")  # 2 seeds
    # Without per-image sizes (a version-3 store) there is no radius row, and it says why.
    md = markdown(_grid(["autoattack-linf"], seeds=(0, 1))
                  + _deepfool_rows((0, 1), sizes_of, with_sizes=False))
    assert "deepfool radius per image" not in md
    assert _table_row(md, "dc", "small", "deepfool within ε=0.5 (secondary)")[6] \
        == "– (sizes per image not stored)"


def test_holm_corrects_the_tables_rows_and_the_sentences_pairs():
    from robustcnn.study.stats import holm

    # Six seeds, all differences positive: each row's Wilcoxon p = 2/2⁶ = 0.031 < 0.05 raw,
    # but the table's four such rows adjust to 4 · 0.031 = 0.125: not significant.
    seeds = tuple(range(6))
    rows = _grid(["autoattack-linf", "fgsm"], seeds=seeds)
    md = markdown(rows)
    table = [r for r in (_table_row(md, "dc", "small", label) for label in
                         ("autoattack-linf ε=0.1", "autoattack-linf ε=0.2",
                          "fgsm ε=0.1 (secondary)", "fgsm ε=0.2 (secondary)"))]
    raw = sp.wilcoxon([0.05] * 6).pvalue
    assert raw < 0.05
    adjusted = holm([raw] * 4)
    for r, adj in zip(table, adjusted):
        assert r[7] == f"{raw:.3f} (not significant)" and r[8] == f"{adj:.3f}"
    assert "after Holm–Bonferroni correction: the family is every row of this table" in md
    # Two compact models: the sentences' family is the two pairs' tests across seeds and cells.
    other = [dict(r, model="tiny", key=r["key"] + "tiny") for r in rows if r["model"] == "small"]
    md = markdown(rows + other)
    sentences = [line for line in md.splitlines() if line.startswith("- **dc vs ")]
    assert len(sentences) == 2
    p = sp.wilcoxon([0.05] * 12).pvalue
    for s in sentences:
        assert f"Wilcoxon signed-rank p = {p:.2g} (Holm-adjusted over the 2 pairs: " \
               f"{2 * p:.2g})" in s and "**significant**" in s
    assert "the 2 pairs' Wilcoxon p-values are one family, Holm–Bonferroni adjusted" in md
