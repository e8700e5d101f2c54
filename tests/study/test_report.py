"""study/report.py on hand-made rows: means and spreads over seeds, the size-matched pairing."""

import pytest

from robustcnn.study.report import csv_text, headline_pairs, markdown, summarise


def _row(model, kind, seed, eps, adv, clean, size, *, sanity=True):
    return {"key": f"{model}-{seed}-{eps}", "study": "t", "model": model, "kind": kind,
            "arch": "lenet5" if kind != "compact" else "tiny", "attack": "fgsm", "norm": "linf",
            "eps": eps, "seed": seed, "examples": 100, "clean_accuracy": clean,
            "adversarial_accuracy": adv, "success_rate": 0.0, "linf_mean": eps, "l2_mean": 1.0,
            "sanity_passed": sanity,
            "sanity": [{"name": "large_eps", "passed": sanity, "detail": ""}],
            "model_info": {"params": 1000, "dense_bytes": 4000, "file_bytes": size,
                           "compression_ratio": 4000 / size},
            "seconds": 1.0, "versions": {"robustcnn": "0", "numpy": "1", "numba": "2",
                                         "python": "3"}}


ROWS = [_row("dense", "dense", s, 0.1, a, 0.9, 4000) for s, a in ((0, 0.5), (1, 0.7))] + \
       [_row("dc", "compressed", s, 0.1, a, 0.8, 100) for s, a in ((0, 0.6), (1, 0.6))] + \
       [_row("big", "compact", s, 0.1, 0.1, 0.7, 3000) for s in (0, 1)] + \
       [_row("small", "compact", s, 0.1, 0.4, 0.7, 120, sanity=s == 0) for s in (0, 1)]


def test_means_spreads_and_the_headline_pairing():
    models, columns = summarise(ROWS)
    assert columns == [("fgsm", 0.1)]
    assert models["dense"]["clean"] == [0.9, 0.9]
    # "small" (120 bytes) is nearer to dc (100 bytes) than "big" (3000 bytes) is.
    assert headline_pairs(models) == [("dc", "small")]
    md = markdown(ROWS)
    # dense: mean of 50% and 70% is 60%, sample std 14.14 pp.
    assert "| dense | 90.00 ± 0.00 | 60.00 ± 14.14 |" in md
    # small's cell failed a sanity check for seed 1: the pair is shown but not counted.
    assert "| fgsm ε=0.1 (sanity check failed) | 60.00 ± 0.00 | 40.00 ± 0.00 | +20.00 |" in md
    assert "more accurate under attack in 0 of 0 (attack, eps) cells, not counting 1 whose" in md
    assert "Sizes are not matched" not in md  # 120 vs 100 bytes is within 1.5×
    assert "- small fgsm ε=0.1 seed 1: large_eps" in md
    assert csv_text(ROWS).splitlines()[1].startswith("t,dense,dense,lenet5,fgsm,linf,0.1,0,100,")


def test_unmatched_sizes_are_flagged_and_empty_databases_say_so():
    rows = [r for r in ROWS if r["model"] != "small"]
    md = markdown(rows)
    assert "### dc (0.1 KiB) vs big (2.9 KiB)" in md
    assert "compact model's file is 30.0× larger" in md
    assert "| fgsm ε=0.1 | 60.00 ± 0.00 | 10.00 ± 0.00 | +50.00 |" in md
    assert "more accurate under attack in 1 of 1 (attack, eps) cells;" in md
    assert "No finished cells" in markdown([])


@pytest.mark.parametrize("kinds", [("dense",), ("dense", "compressed")])
def test_no_pair_without_both_kinds(kinds):
    rows = [r for r in ROWS if r["kind"] in kinds]
    assert headline_pairs(summarise(rows)[0]) == []
    assert "Needs at least one compressed and one compact model" in markdown(rows)


def test_accuracy_rising_with_eps_is_flagged():
    rows = [_row("dense", "dense", 0, e, a, 0.9, 4000) for e, a in ((0.1, 0.5), (0.2, 0.3))]
    assert "never rises with eps" in markdown(rows)
    rows.append(_row("dense", "dense", 0, 0.3, 0.32, 0.9, 4000))  # +2 pp on 100 images: flagged
    md = markdown(rows)
    assert "rises with eps in dense fgsm seed 0: ε=0.2 → ε=0.3" in md
    rows[-1]["adversarial_accuracy"] = 0.31  # one example: within tolerance
    assert "never rises with eps" in markdown(rows)
