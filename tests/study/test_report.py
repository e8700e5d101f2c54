"""study/report/ on hand-made rows: means and spreads over seeds, the size-matched pairing."""

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


def test_pareto_front_on_a_hand_made_example():
    from robustcnn.study.report import pareto_front

    points = [("a", 100, 0.5), ("b", 200, 0.4),   # b: larger and less robust than a
              ("c", 300, 0.7), ("d", 300, 0.6),   # d: as large as c, less robust
              ("e", 50, 0.2), ("f", 400, 0.7),    # f: as robust as c, larger
              ("g", 100, 0.5)]                    # g: the same as a; neither dominates
    assert pareto_front(points) == ["e", "a", "g", "c"]
    assert pareto_front([]) == []
    assert pareto_front([("x", 10, 0.1), ("y", 10, 0.3)]) == ["y"]


def test_fixed_eps_defaults_to_the_middle_of_each_grid():
    from robustcnn.study.report import fixed_eps

    columns = [("fgsm", 0.05), ("fgsm", 0.1), ("fgsm", 0.2), ("pgd", 0.05), ("pgd", 0.2),
               ("deepfool", None)]
    assert fixed_eps(columns) == {"fgsm": 0.1, "pgd": 0.05}
    assert fixed_eps(columns, 0.2) == {"fgsm": 0.2, "pgd": 0.2}
    assert fixed_eps(columns, 0.1) == {"fgsm": 0.1}  # pgd has no 0.1: left out
    assert fixed_eps(columns, {"pgd": 0.2}) == {"pgd": 0.2}
    with pytest.raises(ValueError, match="eps must be"):
        fixed_eps(columns, "0.1")


def _extra(row, **changes):
    return {**row, **changes, "key": f"{row['key']}-{changes.get('attack', '')}"}


def test_unbounded_transfer_and_sanity_rows():
    nan = float("nan")
    base = {(r["model"], r["seed"]): r for r in ROWS}
    rows = list(ROWS)
    for (model, seed), r in base.items():
        rows.append(_extra(r, attack="transfer:fgsm<-dense", adversarial_accuracy=0.3))
    # Unbounded DeepFool: eps NaN (as the store returns it), None, or 0 with its name.
    for seed, l2, eps in ((0, 0.8, nan), (1, 0.9, 0.0)):
        rows.append(_extra(base[("dc", seed)], attack="deepfool", norm="l2", eps=eps,
                           adversarial_accuracy=0.0, success_rate=1.0,
                           metrics={"l2_median": l2}, sanity_passed=None, sanity=None))
    for seed in (0, 1):
        rows.append(_extra(base[("small", seed)], attack="deepfool", norm="l2", eps=None,
                           adversarial_accuracy=0.1, success_rate=None, sanity_passed=None,
                           sanity=None, metrics={"l2_median": 0.5, "success_rate": 0.9}))
    # A model-level sanity row for dc, seed 0 only: it fails.
    rows.append(_extra(base[("dc", 0)], attack="sanity", eps=nan, adversarial_accuracy=None,
                       sanity_passed=False,
                       sanity=[{"name": "gradient_masking", "passed": False, "detail": "g~0"}]))

    models, columns = summarise(rows)
    assert columns == [("fgsm", 0.1), ("transfer:fgsm<-dense", 0.1), ("deepfool", None)]
    assert models["dc"]["failed"] == {("fgsm", 0.1), ("transfer:fgsm<-dense", 0.1),
                                      ("deepfool", None)}
    assert models["dense"]["failed"] == set()
    md = markdown(rows)
    assert "sanity ε" not in md and "sanity (unbounded)" not in md
    header = next(line for line in md.splitlines() if line.startswith("| model | clean |"))
    assert header.endswith("| fgsm ε=0.1 | transfer:fgsm<-dense ε=0.1 | "
                           "deepfool (unbounded): success / median L2 |")
    # dc: success 100%, median L2 mean of 0.8 and 0.9; small: success from metrics.
    assert "| 100.00 ± 0.00 / 0.85 ± 0.071 |" in md
    assert "| 90.00 ± 0.00 / 0.5 ± 0 |" in md
    assert "| deepfool (unbounded) median L2 | 0.85 ± 0.071 | 0.5 ± 0 | +0.35 (L2) |" in md
    # The model-level check flags every cell of dc seed 0, in the headline and the checks.
    assert "| transfer:fgsm<-dense ε=0.1 (sanity check failed) |" in md
    assert "- dc seed 0: gradient_masking (g~0)" in md
    assert "- dc fgsm ε=0.1 seed 0: gradient_masking (model)" in md
    assert "- dc deepfool (unbounded) seed 0: gradient_masking (model)" in md
    assert "- dc fgsm ε=0.1 seed 1" not in md
    assert "never rises with eps" in md
    assert csv_text(rows).count("\n") == 1 + len(rows)  # the CSV keeps every row, sanity too


def test_all_pairs_table_and_the_statement_follow_the_numbers():
    rows = [r for r in ROWS if r["model"] != "small"]
    md = markdown(rows)
    assert "| dc | big | 30.00× (not matched) | 1 of 1 | +50.00 |" in md
    assert "none of them size-matched" in md
    assert "compression kept robustness better than compactness" in md
    # Swap the accuracies: the statement turns around.
    flipped = [dict(r, adversarial_accuracy=0.9 if r["model"] == "big" else
                    r["adversarial_accuracy"]) for r in rows]
    md = markdown(flipped)
    assert "| dc | big | 30.00× (not matched) | 0 of 1 | -30.00 |" in md
    assert "compactness kept robustness better than compression" in md
    # With size-matched pairs, only they count: small (120 B) pairs with dc (100 B); the failed
    # check of small's seed 1 leaves no cell to count.
    md = markdown(ROWS)
    assert "| dc | small | 1.20× | 0 of 0 | – |" in md
    assert "the 1 size-matched pair(s)" in md and "cannot answer the question yet" in md


def test_compare_separates_robustness_from_clean_accuracy():
    """A compressed model more accurate under attack only because it is more accurate clean:
    it wins on accuracy but keeps a smaller share of its clean accuracy."""
    from collections import defaultdict

    from robustcnn.study.report import compare

    def summary(clean, adv):
        return {"clean": [clean], "adv": defaultdict(list, {("fgsm", 0.1): [adv]}),
                "l2_median": {}, "failed": set()}

    res = compare(summary(0.9, 0.45), summary(0.6, 0.36), [("fgsm", 0.1)])
    assert res["wins"] == 1 and res["diffs"] == [pytest.approx(0.09)]
    assert res["rel_wins"] == 0 and res["rel_diffs"] == [pytest.approx(0.5 - 0.6)]


def test_headline_pairs_every_size_matched_compact_model_or_the_nearest():
    from robustcnn.study.report import headline_pairs

    def m(kind, size, adversarial=""):
        return {"kind": kind, "info": {"file_bytes": size, "adversarial": adversarial}}

    models = {"dc": m("compressed", 100), "dc-adv": m("compressed", 100, "compressed"),
              "tiny": m("compressed", 10), "a": m("compact", 120), "b": m("lowrank", 90),
              "c": m("distilled", 200), "d": m("compact", 30), "e": m("compact", 100, "dense")}
    assert headline_pairs(models) == [("dc", "b"), ("dc", "a"), ("tiny", "d")]
