"""The report's adversarial-aware section on hand-made rows: which models it lists with their
training attack, which rivals each adversarial-aware model is tested against (same training
attack, matched ratio; plain compression; the dense model trained on the same attack), and the
paired tests' numbers against scipy's."""

import numpy as np
import pytest
from scipy import stats as sp

from robustcnn.study import stats
from robustcnn.study.report import markdown, summarise
from robustcnn.study.report.aware import aware_section, rivals
from robustcnn.study.report.tables import fixed_eps
from robustcnn.study.store import Outcomes

N = 200  # images per cell
FGSM = "fgsm ε=0.1, 50% of each batch"
PGD = "pgd-linf-7 ε=0.1, 100% of each batch"


def _flags(right):
    out = np.zeros(N, bool)
    out[:right] = True
    return out


def _rows(name, kind, lineage, training, ratio, right, seeds=(0, 1, 2), eps=(0.1, 0.2),
          settings=None):
    """AutoAttack cells of one model: right on ``right(seed, eps)`` of the N images."""
    info = {"params": 1000, "file_bytes": int(4000 / ratio), "compression_ratio": ratio,
            "adversarial": lineage}
    if training is not None:
        info["adversarial_training"] = training
    out = []
    for seed in seeds:
        for e in eps:
            adv = _flags(right(seed, e))
            out.append({"key": f"{name}-{seed}-{e}", "study": "t", "model": name, "kind": kind,
                        "arch": "a", "attack": "autoattack-linf", "norm": "linf", "eps": e,
                        "seed": seed, "examples": N, "clean_accuracy": 0.9,
                        "adversarial_accuracy": float(adv.mean()), "success_rate": 0.0,
                        "linf_mean": e, "l2_mean": 1.0, "sanity_passed": True,
                        "sanity": [], "model_info": info, "settings": settings or {},
                        "versions": {"robustcnn": "0", "numpy": "1", "numba": "2",
                                     "python": "3"},
                        "outcomes": Outcomes(np.arange(N), _flags(180), adv)})
    return out


def _study_rows():
    """Adversarial-aware models at 40× (FGSM and PGD) and 90× (FGSM) with the other orders,
    plain compression and adversarially trained dense models."""
    def base(seed, e):
        return 80 + 4 * seed - int(100 * e)

    return (_rows("aware-40", "compressed", "compressed", FGSM, 41.0,
                  lambda s, e: base(s, e) + 20 + s)
            + _rows("aware-40-pgd", "compressed", "compressed", PGD, 40.0, base)
            + _rows("aware-90", "compressed", "compressed", FGSM, 90.0, base)
            + _rows("then-adv-40", "finetuned", "finetuned", FGSM, 40.0, base)
            + _rows("adv-then-40", "compressed", "dense", FGSM, 38.0, base)
            + _rows("then-adv-40-pgd", "finetuned", "finetuned", PGD, 39.0, base)
            + _rows("dc-40", "compressed", "", None, 41.0, lambda s, e: base(s, e) - 30)
            + _rows("hydra-40-pgd", "compressed", "compressed", PGD, 42.0, base,
                    settings={"pruning": "hydra"})
            + _rows("dc-10", "compressed", "", None, 10.0, base)
            + _rows("dense-adv", "dense", "dense", FGSM, 1.0, lambda s, e: base(s, e) + 20 + s)
            + _rows("dense-adv-pgd", "dense", "dense", PGD, 1.0, base)
            + _rows("dense", "dense", "", None, 1.0, base))


def test_each_aware_model_meets_only_the_rivals_of_the_claim():
    models, _ = summarise(_study_rows())
    assert sorted(rivals(models)) == sorted([
        ("aware-40", "then-adv-40", "other order: compress, then adversarial training"),
        ("aware-40", "adv-then-40", "other order: adversarial training, then compress"),
        ("aware-40", "dc-40", "plain compression"),
        ("aware-40", "dense-adv", "adversarially trained dense"),
        # PGD-trained: the PGD orders, the plain model at its ratio and the PGD dense model.
        ("aware-40-pgd", "then-adv-40-pgd", "other order: compress, then adversarial training"),
        ("aware-40-pgd", "dc-40", "plain compression"),
        ("aware-40-pgd", "dense-adv-pgd", "adversarially trained dense"),
        # HYDRA's robust pruning on the same attack: a baseline, never an aware model itself.
        ("aware-40-pgd", "hydra-40-pgd", "robust pruning: hydra"),
        # 90×: no rival at its ratio but the dense model trained on its attack.
        ("aware-90", "dense-adv", "adversarially trained dense")])


def _table_row(md, first, second):
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 2 and cells[:2] == [first, second]:
            return cells
    raise AssertionError(f"no row {first} | {second}")


def test_the_paired_tests_are_wilcoxon_over_seeds_and_eps_holm_adjusted():
    rows = _study_rows()
    models, columns = summarise(rows)
    md = "\n".join(aware_section(models, columns, fixed_eps(columns)))
    pairs = rivals(models)
    # aware-40 against then-adv-40: 20 + seed more images right in each of 3 seeds × 2 eps.
    row = _table_row(md, "aware-40", "then-adv-40")
    diffs = [(20 + s) / N for s in (0, 1, 2) for _ in (0.1, 0.2)]
    assert float(row[3]) == pytest.approx(100 * np.mean(diffs), abs=0.005)
    assert row[4] == "6 (6/0/0)"
    raw = sp.wilcoxon(diffs).pvalue
    # The family: every pair that has cells (all of them here), Holm over their raw p.
    family = []
    for a, b, _ in pairs:
        d = [x - y for x, y in zip(models[a]["adv"][("autoattack-linf", 0.1)]
                                   + models[a]["adv"][("autoattack-linf", 0.2)],
                                   models[b]["adv"][("autoattack-linf", 0.1)]
                                   + models[b]["adv"][("autoattack-linf", 0.2)])]
        family.append(stats.wilcoxon_test(d).p)
    adjusted = stats.holm(family)[pairs.index(("aware-40", "then-adv-40",
                                               "other order: compress, then adversarial "
                                               "training"))]
    assert row[5] == f"{raw:.3f} / {adjusted:.3f}"
    # McNemar per seed and eps: aware alone right on 20 + seed images, the rival on none.
    assert row[7] == "6/0 of 6"
    # Equal robustness: every pair tied, not significant.
    tied = _table_row(md, "aware-40-pgd", "then-adv-40-pgd")
    assert tied[3] == "+0.00" and tied[4] == "6 (0/0/6)" and tied[8] == "not significant"
    # The first table: the training attack and the interval over seeds.
    listed = _table_row(md, "aware-40", "adversarial-aware compression")
    assert listed[2] == FGSM and listed[3] == "41.0×"
    assert _table_row(md, "dense-adv", "adversarial training (dense, not compressed)")[2] == FGSM
    assert _table_row(md, "dc-40", "none (plain compression)")[2] == "–"
    assert _table_row(md, "hydra-40-pgd", "adversarial-aware compression (hydra pruning)")
    # Nine pairs of six differences each: Holm cannot reach 0.05 (9 × 2⁻⁵ = 0.28).
    assert "In words: no difference between adversarial-aware compression and its rivals" in md
    assert "the smallest Holm-adjusted p possible is 0.281" in md


def test_a_database_without_training_attacks_or_aware_models():
    old = [dict(r, model_info={k: v for k, v in r["model_info"].items()
                               if k != "adversarial_training"}) for r in _study_rows()]
    models, columns = summarise(old)
    md = "\n".join(aware_section(models, columns, fixed_eps(columns)))
    assert _table_row(md, "aware-40", "adversarial-aware compression")[2] == "–"
    # Without the recorded attack every adversarial lineage reads "–": the same attack.
    assert ("aware-90", "dense-adv-pgd", "adversarially trained dense") in rivals(models)
    plain = [r for r in _study_rows() if not r["model_info"]["adversarial"]]
    assert "## Adversarial-aware compression" not in markdown(plain)
    assert "## Adversarial-aware compression" in markdown(_study_rows())


def test_a_significant_pair_is_named_in_the_words():
    seeds = range(6)
    rows = (_rows("aware-40", "compressed", "compressed", FGSM, 41.0,
                  lambda s, e: 100 + s, seeds=seeds)
            + _rows("dc-40", "compressed", "", None, 40.0, lambda s, e: 70, seeds=seeds)
            + _rows("dense-adv", "dense", "dense", FGSM, 1.0, lambda s, e: 130 - s,
                    seeds=seeds))
    models, columns = summarise(rows)
    md = "\n".join(aware_section(models, columns, fixed_eps(columns)))
    # 12 positive differences against dc-40, 12 negative against dense-adv: exact signed-rank
    # p = 2/2¹² each, Holm over two: 2 × that.
    p = sp.wilcoxon([1.0 + 0.01 * k for k in range(12)]).pvalue
    assert _table_row(md, "aware-40", "dc-40")[5] == f"{p:.2g} / {2 * p:.2g}"
    assert _table_row(md, "aware-40", "dc-40")[8] == "aware more robust"
    assert _table_row(md, "aware-40", "dense-adv")[8] == "aware less robust"
    assert ("significantly more robust than dc-40 (plain compression), and significantly less "
            "robust than dense-adv (adversarially trained dense)") in md
