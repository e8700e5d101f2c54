"""The report's statistical sections: every cell with its intervals, and the headline — the
headline attack's robust accuracy of each compressed model beside its size-matched compact
models, with McNemar's test per seed, the tests across seeds and cells, and the sentences drawn
from them (``inference`` gives the numbers)."""

import math

import numpy as np

from .. import stats
from .inference import (across, cell_interval, headline_attack, paired_radii, paired_seeds,
                        white_box)
from .tables import MATCHED, column_label, file_size, headline_pairs, markdown_table

Z95 = 1.959963984540054  # the standard normal's 97.5% point


def _pct(v):
    return f"{100 * v:.2f}"


def _bounds(low, high):
    """An interval of an accuracy in %, clipped to [0, 100] (a t-interval over few seeds can
    reach past them)."""
    return f"[{_pct(max(low, 0.0))}, {_pct(min(high, 1.0))}]"


def p_text(p):
    """A p-value as the report prints it: 2 significant digits below 0.001, else 3 decimals."""
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def ci_text(interval):
    """A cell's figure with its interval: over seeds (t) when there are several, else over test
    images (bootstrap); "–" when none."""
    if interval is None:
        return "–"
    t, boot = interval["t"], interval["bootstrap"]
    if t.low is not None:
        return f"{_pct(t.mean)} {_bounds(t.low, t.high)}"
    if boot is not None:
        return f"{_pct(t.mean)} {_bounds(*boot)}*"
    return f"{_pct(t.mean)} (one seed, no per-image data)"


def _autoattack_words(models, attack):
    """What the AutoAttack cells ran: the standard evaluation, unless the study file set its
    options (another version, fewer iterations or queries)."""
    options = next((o for m in models.values() for c, o in m["options"].items()
                    if c[0] == attack and o), None)
    ran = ("AutoAttack's standard evaluation" if not options else
           "AutoAttack with the study's options " + ", ".join(f"{k}={v}" for k, v in
                                                            sorted(options.items()))
           + (" (not the standard evaluation's budget)"
              if set(options) - {"version"} or options.get("version") != "standard" else ""))
    return f"{ran} (the per-image worst case of its attacks), robust accuracy at each eps"


def _mean_ci(interval):
    """A mean over seeds with its t-interval, or alone with one seed."""
    if interval.low is None:
        return f"{_pct(interval.mean)} (one seed)"
    return f"{_pct(interval.mean)} {_bounds(interval.low, interval.high)}"


def sampling_sentence(examples):
    """The sampling error of a robust accuracy at the study's image counts."""
    if not examples:
        return ""
    parts = [f"at most {100 * stats.max_sampling_error(n):.2f} pp at n = {n} images (95%: "
             f"±{100 * Z95 * stats.max_sampling_error(n):.2f} pp)" for n in examples]
    return ("Sampling error: an accuracy p measured on n test images has standard error "
            "√(p(1−p)/n), " + "; ".join(parts) + ". Differences smaller than that are noise "
            "of the image sample, whatever the seeds say.")


def intervals_section(models, columns):
    """Every model's clean accuracy and accuracy under each bounded attack and eps, with the
    interval over seeds and the bootstrap over test images."""
    rows, lacking = [], False
    for name, m in models.items():
        for c in [("clean", None)] + [c for c in columns if c[1] is not None]:
            iv = cell_interval(m, c)
            if iv is None:
                continue
            t, boot = iv["t"], iv["bootstrap"]
            lacking |= boot is None
            rows.append([name, "clean" if c[0] == "clean" else column_label(c), iv["seeds"],
                         _pct(t.mean),
                         _bounds(t.low, t.high) if t.low is not None else "– (one seed)",
                         f"{_bounds(*boot)} ({iv['images']} images)"
                         if boot is not None else "– (no per-image data)"])
    out = ["## Accuracy with 95% confidence intervals", "",
           f"Per model and cell: the mean over seeds; its {stats.CONFIDENCE:.0%} t-interval over "
           f"seeds (mean ± t·s/√n, n seeds; none with one seed); and the {stats.CONFIDENCE:.0%} "
           f"percentile bootstrap over the test images ({stats.RESAMPLES:,} resamples, seed "
           f"{stats.SEED}; with several seeds an image counts by the share of seeds that got "
           f"it right, and the images are resampled together). The interval over seeds covers "
           f"training and attack randomness, the bootstrap the choice of test images. "
           f"Accuracies in %; intervals clipped to [0, 100].", "",
           markdown_table(["model", "cell", "seeds", "mean", "95% CI over seeds",
                           "95% CI over test images"], rows)]
    if lacking:
        out += ["", "No per-image data: the cell was stored by a robustcnn before per-image "
                    "outcomes were recorded (results schema version 2); rerun it in a new "
                    "database for the bootstrap and McNemar's test."]
    return out


def _mcnemar(pairs):
    """McNemar per seed: ``s0: p (only a / only b)``."""
    if not pairs:
        return "–"
    return "; ".join(f"s{seed}: –" if t is None else
                     f"s{seed}: {p_text(t.p)} ({t.first}/{t.second})" for seed, _, _, t in pairs)


def _verdict(p):
    """The words for an (adjusted) p-value."""
    return "significant" if p < stats.ALPHA else "not significant"


def _radius(v):
    return "inf" if math.isinf(v) else f"{v:.3g}"


def _min_p(n):
    """The smallest two-sided p an exact sign or signed-rank test of n non-zero pairs gives."""
    return min(1.0, 2.0 ** (1 - n)) if n else 1.0


def _pair_sentence(models, comp, small, attack, columns, res, adjusted, family):
    """One sentence on a pair under the headline attack, from ``across`` (``res``: None with
    no cell to compare) with its Wilcoxon p Holm-adjusted (``adjusted``) over the ``family``
    of pairs, and McNemar."""
    a, b = models[comp], models[small]
    sa, sb = a["info"].get("file_bytes") or 0, b["info"].get("file_bytes") or 0
    matched = sa and sb and max(sa, sb) / min(sa, sb) <= MATCHED
    head = (f"**{comp} vs {small}** ({file_size(sa)} vs {file_size(sb)}, "
            f"{'size-matched' if matched else 'sizes not matched'}), {attack}")
    if res is None:
        flagged = any(c in a["failed"] or c in b["failed"] for c in columns)
        return (f"{head}: no cell to compare" + (" whose sanity checks passed on both "
                                                  "(reported apart below)." if flagged else "."))
    diffs, w, s = res["diffs"], res["wilcoxon"], res["sign"]
    mean = 100 * sum(diffs) / len(diffs)
    seeds = sorted({seed for c in res["cells"] for seed, *_ in paired_seeds(a, b, c)})
    tests = [t for c in res["cells"] for *_, t in paired_seeds(a, b, c) if t is not None]
    better = sum(t.significant and t.first > t.second for t in tests)
    worse = sum(t.significant and t.second > t.first for t in tests)
    if adjusted < stats.ALPHA:
        verdict = (f"**significant** across seeds and cells: the "
                   f"{'compressed' if mean > 0 else 'compact'} model is more robust")
    else:
        verdict = (f"**not significant** across seeds and cells (p ≥ {stats.ALPHA:g}"
                   + (", Holm-adjusted" if family > 1 else "") + "): these numbers do "
                   "not show either model more robust")
    floor = _min_p(w.first + w.second)
    limit = (f" (with {w.first + w.second} non-zero pair(s) the test cannot go below "
             f"p = {floor:.3g})" if floor >= stats.ALPHA else "")
    mcnemar = (f" McNemar's exact test per seed and eps (uncorrected): compressed significantly "
               f"more robust in {better}, compact in {worse}, of {len(tests)}." if tests else
               " No per-image data for McNemar's test.")
    return (f"{head}: the compressed model's robust accuracy is {mean:+.2f} pp from the "
            f"compact one's on average (compressed − compact) over {len(seeds)} seed(s) × "
            f"{len(res['cells'])} eps = {len(diffs)} pairs ({w.first} higher, {w.second} lower, "
            f"{w.ties} tied); Wilcoxon signed-rank p = {p_text(w.p)}"
            + (f" (Holm-adjusted over the {family} pairs: {p_text(adjusted)})"
               if family > 1 else "")
            + f"{limit}, sign test p = {p_text(s.p)}: {verdict}.{mcnemar}")


def tests_section(models, columns, examples):
    """The headline's statistics (a subsection of the report's headline): robust accuracy under
    the headline attack with intervals, the paired tests of each compressed model against its
    compact pairs (``tables.headline_pairs``), and the sentences drawn from them."""
    out = ["### Robust accuracy with 95% intervals and paired tests", ""]
    attack, why = headline_attack(models, columns)
    if attack is None:
        return out + ["No bounded white-box attack has results: nothing to head the report."]
    secondary = list(dict.fromkeys(c[0] for c in columns if white_box(c) and c[0] != attack))
    out.append(f"Headline robustness: **{attack}**, "
               + (_autoattack_words(models, attack) if why == "autoattack" else
                  "the strongest attack this study has (the lowest mean robust accuracy over "
                  "the cells its bounded white-box attacks share; the study has no AutoAttack "
                  "cells)")
               + (f"; {', '.join(secondary)} are secondary rows." if secondary else ".")
               + " An unbounded attack (DeepFool, C&W) is a secondary row at each radius its "
                 "study entry lists (the accuracy that remains when only perturbations within "
                 "it count); its median perturbation size is compared below.")
    sampling = sampling_sentence(examples)
    if sampling:
        out += ["", sampling]
    pairs = headline_pairs(models)
    if not pairs:
        return out + ["", "Needs at least one compressed and one compact model (never trained "
                          "adversarially) in the database."]
    head_cols = [c for c in columns if c[0] == attack and c[1] is not None]
    found = [across(models[comp], models[small], head_cols) for comp, small in pairs]
    tested = [r["wilcoxon"].p for r in found if r is not None]
    adjusted = iter(stats.holm(tested))
    family = len(tested)
    out += ["", "In words (the headline attack, over all its eps and seeds"
            + (f"; the {family} pairs' Wilcoxon p-values are one family, Holm–Bonferroni "
               f"adjusted, and \"significant\" reads the adjusted p" if family > 1 else "")
            + "):"]
    out.append("")
    for (comp, small), res in zip(pairs, found):
        adj = next(adjusted) if res is not None else None
        out.append(f"- {_pair_sentence(models, comp, small, attack, head_cols, res, adj, family)}")
    rows, apart = [], []
    for comp, small in pairs:
        a, b = models[comp], models[small]
        ordered = head_cols + [c for s in secondary for c in columns if c[0] == s]
        for c in ordered:
            pairs_c = paired_seeds(a, b, c)
            if not pairs_c:
                continue
            ia, ib = cell_interval(a, c), cell_interval(b, c)
            diffs = [va - vb for _, va, vb, _ in pairs_c]
            diff = 100 * sum(diffs) / len(diffs)  # over the seeds both have
            seeds_test = stats.wilcoxon_test(diffs) if len(diffs) > 1 else None
            row = [comp, small, column_label(c) + ("" if c[0] == attack else " (secondary)"),
                   ci_text(ia), ci_text(ib), f"{diff:+.2f}", _mcnemar(pairs_c), seeds_test]
            flagged = [n for n, m in ((comp, a), (small, b)) if c in m["failed"]]
            (apart if flagged else rows).append(row + ([", ".join(flagged)] if flagged else []))
        for (unbounded, threshold) in sorted(set(a["within"]) & set(b["within"])):
            by_a, by_b = a["within"][(unbounded, threshold)], b["within"][(unbounded, threshold)]
            seeds = sorted(set(by_a) & set(by_b))
            if not seeds:
                continue
            ia = stats.t_interval([by_a[s] for s in seeds])
            ib = stats.t_interval([by_b[s] for s in seeds])
            diffs = [by_a[s] - by_b[s] for s in seeds]
            seeds_test = stats.wilcoxon_test(diffs) if len(diffs) > 1 else None
            row = [comp, small, f"{unbounded} within ε={threshold} (secondary)",
                   _mean_ci(ia), _mean_ci(ib), f"{100 * (ia.mean - ib.mean):+.2f}",
                   "– (sizes per image not stored)" if not paired_radii(a, b, unbounded) else
                   "– (radii compared per image below)", seeds_test]
            flagged = [n for n, m in ((comp, a), (small, b)) if (unbounded, None) in m["failed"]]
            (apart if flagged else rows).append(row + ([", ".join(flagged)] if flagged else []))
        for unbounded in sorted({c[0] for c in columns if c[1] is None}):
            by_seed = paired_radii(a, b, unbounded)
            if not by_seed:
                continue
            diffs = stats.radius_diffs([ma for _, ma, _, _ in by_seed],
                                       [mb for _, _, mb, _ in by_seed])
            seeds_test = stats.wilcoxon_test(diffs) if len(diffs) > 1 else None
            median_a = float(np.median([ma for _, ma, _, _ in by_seed]))
            median_b = float(np.median([mb for _, _, mb, _ in by_seed]))
            row = [comp, small, f"{unbounded} radius per image (secondary)",
                   f"median {_radius(median_a)}", f"median {_radius(median_b)}",
                   "–", "Wilcoxon on radii " + "; ".join(
                       f"s{seed}: {p_text(t.p)} ({t.first}/{t.second})"
                       for seed, _, _, t in by_seed), seeds_test]
            flagged = [n for n, m in ((comp, a), (small, b)) if (unbounded, None) in m["failed"]]
            (apart if flagged else rows).append(row + ([", ".join(flagged)] if flagged else []))
    # The family the table corrects: the across-seeds test of every row counted (not apart).
    table_p = iter(stats.holm([r[7].p for r in rows if r[7] is not None]))
    for r in rows:
        test = r[7]
        if test is None:
            r[7:8] = ["– (one seed)", "–"]
        else:
            adj = next(table_p)
            r[7:8] = [f"{p_text(test.p)} ({_verdict(adj)})", p_text(adj)]
    for r in apart:
        test = r[7]
        r[7:8] = ["– (one seed)" if test is None else f"{p_text(test.p)} (uncorrected)", "–"]
    header = ["compressed", "compact", "attack", "compressed, 95% CI", "compact, 95% CI",
              "difference (pp)", "McNemar p per seed (only compressed / only compact right)",
              "across seeds: Wilcoxon p (verdict: Holm-adjusted)", "Holm-adjusted p"]
    out += ["", markdown_table(header, rows) if rows else
            "No cell that both models of a pair ran passed its sanity checks on both"
            + (": they are reported apart below." if apart else "."), "",
            "Intervals are over seeds (t) or, marked *, with one seed, over test images "
            "(bootstrap). McNemar's exact test compares the two models image by image on the "
            "same attacked images of one seed (the binomial test on the images only one of "
            f"them got right); the tests across seeds (per row) and across seeds and cells "
            f"(the sentences) are Wilcoxon's signed-rank and the sign test on the paired "
            f"differences. An unbounded attack's row \"radius per image\" compares the "
            f"perturbation each image needed (0 where the model was wrong on the clean image, "
            f"inf where the attack did not fool it) by Wilcoxon's signed-rank test on the same "
            f"images per seed (images where the compressed / the compact model needed more), "
            f"and across seeds on the per-seed median radii. \"Significant\" means p < "
            f"{stats.ALPHA:g}, two-sided, after Holm–Bonferroni correction: the family is every "
            f"row of this table with a test across seeds (each pair × attack × eps; rows "
            f"reported apart are not in it, their p uncorrected), and separately the pairs' "
            f"tests across seeds and cells in the sentences above. McNemar's p per seed are "
            f"shown uncorrected. Cells of one model at several eps share the model and the "
            f"images, so the test across cells treats as independent what is not — read it "
            f"as a guide."]
    if apart:
        out += ["", "Reported apart: cells whose sanity checks failed for a model (gradient "
                    "masking or a failing attack) — their robust accuracy may be overstated, and "
                    "they are not counted above.", "",
                markdown_table(header + ["failed checks"], apart)]
    return out
