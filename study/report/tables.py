"""A study database → ``cells.csv``, ``report.md`` and three figures (PNG).

The Markdown report holds: the models (kind, parameters, file size, compression ratio, clean
accuracy); adversarial accuracy per model × attack × eps (and, for unbounded attacks such as
DeepFool or C&W, the success rate and median L2 perturbation); robust accuracy against
compression ratio; the Pareto front of file size against robust accuracy; and the headline
comparison — each compressed model beside the compact model nearest in file size, per attack
and eps, then all pairs in one table and a statement generated from it — with the sanity checks
that failed. Values are the mean over seeds, with the standard deviation when there is more than
one seed.

Rows are cells of ``store.Store``. Three kinds of attack name need care: an unbounded attack
has no eps (stored as NaN, None, or 0 with an unbounded attack's name); a transfer attack is
named like ``transfer:fgsm<-lenet5`` and has an eps; and a row with attack ``sanity`` holds
checks of a whole (model, seed), attached here to each of that model's cells for that seed.

The figures (``FIGURES``) need matplotlib (the ``plot`` extra), imported only when drawing;
without it the CSV and Markdown are written and the report says how to get the figures.
"""

import csv
import io
import math
import os
from collections import defaultdict

from .store import Store

CSV_COLUMNS = ("study", "model", "kind", "arch", "attack", "norm", "eps", "seed", "examples",
               "clean_accuracy", "adversarial_accuracy", "success_rate", "linf_mean", "l2_mean",
               "sanity_passed", "params", "file_bytes", "compression_ratio", "seconds",
               "robustcnn", "numpy", "numba", "python", "key")
FIGURES = ("accuracy_vs_eps.png", "robust_vs_ratio.png", "pareto_size_vs_robust.png")
PLOT_NOTE = "Figures need matplotlib: `pip install robustcnn[plot]`."
SANITY_ATTACK = "sanity"  # a row of checks of a whole (model, seed), not an attack
# The two sides of the headline comparison.
# The headline's two sides: models made small by compression, and models designed (or
# distilled, or factorised) small — among models never trained adversarially.
COMPRESSED_KINDS = ("compressed", "finetuned")
COMPACT_KINDS = ("compact", "distilled", "lowrank")
# How a model's lineage was trained adversarially (``Study.adversarial``) → what it is called.
ADVERSARIAL_LINEAGE = {"": "none", "compressed": "adversarial-aware compression",
                       "finetuned": "compress, then adversarial training",
                       "dense": "adversarial training, then compress"}
# Line style, marker and colour per model kind; any other kind gets OTHER_STYLE.
KIND_STYLES = {"dense": ("-", "o", "C0"), "compressed": ("--", "s", "C1"),
               "compact": (":", "^", "C2"), "distilled": ("-.", "D", "C3"),
               "lowrank": ((0, (5, 1)), "v", "C4"), "finetuned": ((0, (3, 1, 1, 1)), "P", "C5")}
OTHER_STYLE = ((0, (1, 2)), "X", "C7")


def csv_text(rows):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        flat = {**r, **(r["model_info"] or {}), **(r["versions"] or {})}
        writer.writerow([flat.get(c) for c in CSV_COLUMNS])
    return out.getvalue()


def _missing(v):
    return v is None or (isinstance(v, float) and math.isnan(v))


def base_attack(name):
    """The attack a (possibly transfer) attack name runs: ``transfer:fgsm<-lenet5`` → fgsm."""
    return str(name).rsplit(":", 1)[-1].split("<-", 1)[0].strip().lower()


def is_unbounded(attack, eps):
    """True for a cell without an eps: NaN or None, or 0 for an attack that takes no eps."""
    if _missing(eps):
        return True
    if eps != 0:
        return False
    from ..attacks.evaluate import ALIASES, UNBOUNDED  # only for eps 0: it imports the engine

    name = base_attack(attack)
    return ALIASES.get(name, name) in UNBOUNDED


def prepare(rows):
    """The attack cells of ``rows`` (copies): eps None for unbounded attacks, and the checks of
    the (model, seed)'s sanity row, if any, appended to ``sanity`` (each marked
    ``"scope": "model"``) and folded into ``sanity_passed``. → (cells, sanity rows)."""
    checks = {(r["model"], r["seed"]): r for r in rows if r["attack"] == SANITY_ATTACK}
    cells = []
    for r in rows:
        if r["attack"] == SANITY_ATTACK:
            continue
        r = dict(r, eps=None if is_unbounded(r["attack"], r["eps"]) else r["eps"])
        s = checks.get((r["model"], r["seed"]))
        if s is not None:
            r["sanity"] = list(r["sanity"] or []) + [dict(c, scope="model")
                                                     for c in s["sanity"] or []]
            passed = [p for p in (r["sanity_passed"], s["sanity_passed"]) if p is not None]
            r["sanity_passed"] = all(passed) if passed else None
        cells.append(r)
    return cells, list(checks.values())


def _stats(values):
    values = [v for v in values if not _missing(v)]
    if not values:
        return None, None, 0
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None, 1
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var), len(values)


def _pct(values):
    mean, std, n = _stats(values)
    if mean is None:
        return "–"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def _num(values):
    mean, std, n = _stats(values)
    if mean is None:
        return "–"
    return f"{mean:.3g}" + (f" ± {std:.2g}" if std is not None else "")


def _size(n):
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def _cell(s):
    return str(s).replace("|", "\\|")


def _table(header, rows):
    lines = ["| " + " | ".join(_cell(c) for c in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _label(column):
    attack, eps = column
    return f"{attack} (unbounded)" if eps is None else f"{attack} ε={eps:g}"


def _column_order(column):
    attack, eps = column
    return (eps is None, attack, 0.0 if eps is None else eps)


def summarise(rows):
    """{model: {"kind", "arch", "info" (of the first seed), "clean": [per seed],
    "adv": {(attack, eps): [per seed]}, "success", "l2_median": {(attack, None): [per seed]},
    "failed": {(attack, eps) whose checks failed for some seed}}} and the sorted (attack, eps)
    columns, bounded ones first; eps is None for an unbounded attack. Sanity rows are not
    columns; their checks count for every cell of their (model, seed)."""
    models, columns = {}, set()
    clean_seen = set()
    for r in prepare(rows)[0]:
        m = models.setdefault(r["model"], {"kind": r["kind"], "arch": r["arch"],
                                           "info": r["model_info"] or {}, "clean": [],
                                           "adv": defaultdict(list), "sizes": [],
                                           "success": defaultdict(list),
                                           "l2_median": defaultdict(list), "failed": set()})
        if (r["model"], r["seed"]) not in clean_seen and not _missing(r["clean_accuracy"]):
            clean_seen.add((r["model"], r["seed"]))
            m["clean"].append(r["clean_accuracy"])
            m["sizes"].append((r["model_info"] or {}).get("file_bytes"))
        column = (r["attack"], r["eps"])
        m["adv"][column].append(r["adversarial_accuracy"])
        if r["eps"] is None:
            metrics = r.get("metrics") or {}
            success = r["success_rate"]
            m["success"][column].append(metrics.get("success_rate") if _missing(success)
                                        else success)
            m["l2_median"][column].append(metrics.get("l2_median"))
        if r["sanity_passed"] is False:
            m["failed"].add(column)
        columns.add(column)
    return models, sorted(columns, key=_column_order)


# Two files within this factor of each other count as the same size.
MATCHED = 1.5


def headline_pairs(models):
    """Each compressed model with every compact model whose file is within ``MATCHED`` of its
    size, or, when none is, with the nearest one (log scale); models trained adversarially are
    left out on both sides."""
    def size(n):
        return models[n]["info"].get("file_bytes") or 0

    def plain(n):  # never trained adversarially: the paper's natural-robustness question
        return not models[n]["info"].get("adversarial")

    compact = [n for n, m in models.items() if m["kind"] in COMPACT_KINDS and size(n) > 0
               and plain(n)]
    pairs = []
    for name, m in models.items():
        if m["kind"] not in COMPRESSED_KINDS or not compact or size(name) <= 0 or not plain(name):
            continue
        gap = {c: abs(math.log(size(c) / size(name))) for c in compact}
        matched = sorted((c for c in compact if gap[c] <= math.log(MATCHED)), key=gap.get)
        pairs += [(name, c) for c in matched or [min(compact, key=gap.get)]]
    return pairs


def fixed_eps(columns, eps=None):
    """{bounded attack: the eps its robust accuracy is read at}: ``eps`` if None, the middle
    of the attack's eps grid (the lower middle of an even grid); a number, that eps for every
    attack whose grid has it (the others are left out); a dict, {attack: eps} as given (again
    only eps in the grid)."""
    grids = defaultdict(list)
    for attack, e in columns:
        if e is not None:
            grids[attack].append(e)
    if eps is None:
        return {a: sorted(g)[(len(g) - 1) // 2] for a, g in grids.items()}
    if isinstance(eps, dict):
        wanted = eps
    elif isinstance(eps, (int, float)) and not isinstance(eps, bool):
        wanted = {a: eps for a in grids}
    else:
        raise ValueError(f"report: eps must be None, a number or {{attack: eps}}, not {eps!r}")
    return {a: e for a, g in grids.items() if a in wanted
            for e in g if math.isclose(e, wanted[a], rel_tol=1e-9, abs_tol=1e-12)}


def pareto_front(points):
    """The names of ``points`` [(name, size, accuracy)] that no other point dominates (no larger
    and at least as accurate, better in one), sorted by size: smaller and more robust is
    better."""
    front = [(s, -a, n) for n, s, a in points
             if not any(s2 <= s and a2 >= a and (s2 < s or a2 > a) for _, s2, a2 in points)]
    return [n for s, a, n in sorted(front)]


def pareto_points(models, fixed):
    """{attack: [(model, file bytes, mean robust accuracy at fixed[attack])]}, models with
    both known."""
    out = {}
    for attack, e in fixed.items():
        pts = []
        for name, m in models.items():
            acc = _stats(m["adv"].get((attack, e), []))[0]
            size = m["info"].get("file_bytes")
            if acc is not None and size:
                pts.append((name, size, acc))
        out[attack] = pts
    return out


def non_monotone(rows):
    """(model, attack, seed, eps, larger eps) where adversarial accuracy rose with eps by more
    than one example: the cross-eps check the per-cell sanity checks cannot make."""
    runs = defaultdict(list)
    for r in prepare(rows)[0]:
        if r["eps"] is not None and not _missing(r["adversarial_accuracy"]):
            runs[(r["model"], r["attack"], r["seed"])].append(r)
    out = []
    for (model, attack, seed), cells in runs.items():
        cells.sort(key=lambda r: r["eps"])
        for a, b in zip(cells, cells[1:]):
            if b["adversarial_accuracy"] > a["adversarial_accuracy"] + 1.5 / max(b["examples"], 1):
                out.append((model, attack, seed, a["eps"], b["eps"]))
    return out


def compare(a, b, columns):
    """Model summaries ``a`` (compressed) and ``b`` (compact), column by column: the table rows
    [label, a, b, difference], and over the bounded columns whose checks passed on both: wins
    (a more accurate), ties, total and the differences a − b (fractions); doubtful = cells
    left out because a check failed. Unbounded attacks are compared by median L2 (larger =
    more robust) in the table, not counted."""
    out = dict(table=[], wins=0, ties=0, total=0, doubtful=0, diffs=[], rel_wins=0,
               rel_diffs=[])
    clean_a, clean_b = _stats(a["clean"])[0], _stats(b["clean"])[0]
    for c in [("clean", None)] + columns:
        if c[0] != "clean" and c[1] is None:
            va, vb = a["l2_median"].get(c, []), b["l2_median"].get(c, [])
            ma, mb = _stats(va)[0], _stats(vb)[0]
            diff = "–" if ma is None or mb is None else f"{ma - mb:+.3g} (L2)"
            out["table"].append([f"{c[0]} (unbounded) median L2", _num(va), _num(vb), diff])
            continue
        va = a["clean"] if c[0] == "clean" else a["adv"].get(c, [])
        vb = b["clean"] if c[0] == "clean" else b["adv"].get(c, [])
        ma, mb = _stats(va)[0], _stats(vb)[0]
        diff = "–" if ma is None or mb is None else f"{100 * (ma - mb):+.2f}"
        flagged = c in a["failed"] or c in b["failed"]
        out["doubtful"] += flagged
        if c[0] != "clean" and ma is not None and mb is not None and not flagged:
            out["total"] += 1
            out["wins"] += ma > mb
            out["ties"] += ma == mb
            out["diffs"].append(ma - mb)
            # Robustness apart from clean accuracy: the share of it each model keeps.
            if clean_a and clean_b:
                out["rel_diffs"].append(ma / clean_a - mb / clean_b)
                out["rel_wins"] += ma / clean_a > mb / clean_b
        label = "clean" if c[0] == "clean" else _label(c)
        out["table"].append([label + (" (sanity check failed)" if flagged else ""), _pct(va),
                             _pct(vb), diff])
    return out


def _statement(results, seeds, examples):
    """One paragraph from the all-pairs numbers: ``results`` [(matched, compare result)]."""
    def tally(rs):
        wins = sum(r["wins"] for r in rs)
        ties = sum(r["ties"] for r in rs)
        total = sum(r["total"] for r in rs)
        diffs = [d for r in rs for d in r["diffs"]]
        return wins, ties, total - wins - ties, total, (100 * sum(diffs) / len(diffs)
                                                        if diffs else None)

    def relative(rs):
        diffs = [d for r in rs for d in r.get("rel_diffs", [])]
        if not diffs:
            return ""
        wins = sum(r.get("rel_wins", 0) for r in rs)
        return (f" Apart from clean accuracy — as the share of its clean accuracy a model keeps "
                f"under attack — the compressed model kept more in {wins} of {len(diffs)} "
                f"cells, by {100 * sum(diffs) / len(diffs):+.2f} pp of its clean accuracy on "
                f"average.")

    matched = [r for ok, r in results if ok]
    basis = matched or [r for _, r in results]
    wins, ties, losses, total, mean = tally(basis)
    which = (f"the {len(matched)} size-matched pair(s) (file sizes within {MATCHED:g}×)"
             if matched else
             f"the {len(results)} pair(s), none of them size-matched (so this is not yet the "
             f"equal-size comparison)")
    if total == 0:
        return (f"Over {which}, no (attack, eps) cell has results with passing sanity checks "
                f"for both models: the database cannot answer the question yet.")
    noise = 100 / math.sqrt(max(examples, 1))
    if wins > losses and mean > 0:
        lean = "compression kept robustness better than compactness"
    elif losses > wins and mean < 0:
        lean = "compactness kept robustness better than compression"
    else:
        lean = "neither compression nor compactness kept robustness consistently better"
    size = ("larger than" if abs(mean) > noise else "within")
    return (f"Over {which}, the compressed model was more accurate under attack in {wins} of "
            f"{total} (attack, eps) cells, less accurate in {losses}"
            f"{f' and tied in {ties}' if ties else ''}, by {mean:+.2f} pp on average "
            f"(compressed − compact). On these numbers {lean}; the mean difference is {size} "
            f"the sampling noise of one cell (about 1/√{examples} = {noise:.1f} pp), with "
            f"{len(seeds)} seed(s).{relative(basis)}")


def markdown(rows, *, source="the database", figures=(), note=None, eps=None):
    """The report as Markdown. ``figures``: the file names of ``FIGURES`` that were drawn
    (embedded beside their tables); ``note``: a line on figures not drawn; ``eps``: where robust
    accuracy is read (``fixed_eps``)."""
    cells, sanity_rows = prepare(rows)
    if not cells and not sanity_rows:
        return f"# Study report\n\nNo finished cells in {source}.\n"
    models, columns = summarise(rows)
    fixed = fixed_eps(columns, eps)
    seeds = sorted({r["seed"] for r in rows})
    studies = sorted({str(r["study"]) for r in rows})
    examples = sorted({r["examples"] for r in cells if r["examples"]})
    v = rows[0]["versions"] or {}
    out = [f"# Study report: {', '.join(studies)}", "",
           f"{len(cells)} cells from {source}; seeds {seeds} (values: mean over seeds, ± sample "
           f"standard deviation when there are several); {', '.join(map(str, examples))} attacked "
           f"test images per cell; accuracies in %. robustcnn {v.get('robustcnn')}, NumPy "
           f"{v.get('numpy')}, Numba {v.get('numba')}, Python {v.get('python')}.", ""]

    out += ["## Models", ""]
    out.append(_table(
        ["model", "kind", "architecture", "parameters", "file size", "compression ratio",
         "clean accuracy"],
        [[n, m["kind"], m["arch"], f"{m['info'].get('params', 0):,}",
          _size(m["info"].get("file_bytes", 0)), f"{m['info'].get('compression_ratio', 0):.1f}×",
          _pct(m["clean"])] for n, m in models.items()]))
    out += ["", "File size is the `.rcnn` file; the compression ratio is the model's parameters "
                "as dense float32 over its file size (about 1× for dense and compact models).", ""]

    def value(m, c):
        if c[1] is not None:
            return _pct(m["adv"].get(c, []))
        return f"{_pct(m['success'].get(c, []))} / {_num(m['l2_median'].get(c, []))}"

    head = [_label(c) + (": success / median L2" if c[1] is None else "") for c in columns]
    out += ["## Adversarial accuracy per model, attack and eps", ""]
    out.append(_table(["model", "clean"] + head,
                      [[n, _pct(m["clean"])] + [value(m, c) for c in columns]
                       for n, m in models.items()]))
    if any(c[1] is None for c in columns):
        out += ["", "Unbounded attacks have no eps: their columns show the success rate (%) and "
                    "the median L2 size of the perturbations found (larger = more robust)."]
    if FIGURES[0] in figures:
        out += ["", f"![Accuracy against eps per model, one panel per attack]({FIGURES[0]})"]

    out += ["", "## Robust accuracy against compression ratio", ""]
    def ratio(n):
        return models[n]["info"].get("compression_ratio", 0)

    ranked = sorted(models, key=lambda n: (str(models[n]["arch"]), ratio(n)))
    out.append(_table(["model", "kind", "arch", "ratio", "clean"] + head,
                      [[n, models[n]["kind"], models[n]["arch"], f"{ratio(n):.1f}×",
                        _pct(models[n]["clean"])] + [value(models[n], c) for c in columns]
                       for n in ranked]))
    at = ", ".join(f"{a} ε={e:g}" for a, e in fixed.items()) or "none"
    out += ["", f"The figures and the Pareto front read robust accuracy at one eps per attack: "
                f"{at}."]
    if FIGURES[1] in figures:
        out += ["", f"![Robust accuracy against compression ratio]({FIGURES[1]})"]

    aware = [n for n in models if models[n]["kind"] in COMPRESSED_KINDS
             and models[n]["info"].get("adversarial") is not None]
    if any(models[n]["info"].get("adversarial") for n in aware):
        out += ["", "## Adversarial-aware compression", "",
                "Compressed models by how adversarial training entered their making: inside "
                "the prune-retrain and fine-tune steps (adversarial-aware), after compression, "
                "or before it (an adversarially trained base), beside plain compression.", ""]
        cols = [(a, e) for a, e in fixed.items()]
        lineage = {n: models[n]["info"].get("adversarial") or "" for n in aware}
        ordered = sorted(aware, key=lambda n: (lineage[n], ratio(n)))
        out.append(_table(["model", "adversarial training", "ratio", "clean"]
                          + [_label(c) for c in cols],
                          [[n, ADVERSARIAL_LINEAGE.get(lineage[n], lineage[n]),
                            f"{ratio(n):.1f}×", _pct(models[n]["clean"])]
                           + [_pct(models[n]["adv"].get(c, [])) for c in cols]
                           for n in ordered]))

    out += ["", "## Pareto front: file size against robust accuracy", "",
            "A model is on the front when no other model is both no larger and at least as "
            "robust (and better in one): the models worth their size.", ""]
    front_rows = []
    for attack, pts in pareto_points(models, fixed).items():
        by_name = {n: (s, a) for n, s, a in pts}
        column = (attack, fixed[attack])
        for n in pareto_front(pts):
            flag = " (sanity check failed)" if column in models[n]["failed"] else ""
            front_rows.append([_label(column), n + flag, models[n]["kind"],
                               _size(by_name[n][0]), _pct(models[n]["adv"][column])])
    out.append(_table(["attack", "model", "kind", "file size", "robust accuracy"], front_rows)
               if front_rows else "No bounded attack with file sizes and results.")
    if FIGURES[2] in figures:
        out += ["", f"![File size against robust accuracy, the Pareto front]({FIGURES[2]})"]

    out += ["", "## Headline: at equal size, compressed vs compact", "",
            "Each compressed model (never trained adversarially) beside every compact, "
            "distilled or low-rank model (never trained adversarially) whose file is within "
            f"{MATCHED:g}× of its size (or the nearest one, flagged, when none is).", ""]
    pairs = headline_pairs(models)
    if not pairs:
        out.append("Needs at least one compressed and one compact model in the database.")
    results = []
    for comp, small in pairs:
        a, b = models[comp], models[small]
        sa, sb = a["info"]["file_bytes"], b["info"]["file_bytes"]
        ratio = max(sa, sb) / min(sa, sb)
        out += [f"### {comp} ({_size(sa)}) vs {small} ({_size(sb)})", ""]
        if ratio > MATCHED:
            out += [f"**Sizes are not matched**: the {'compact' if sb > sa else 'compressed'} "
                    f"model's file is {ratio:.1f}× larger, so this is not yet the paper's "
                    f"equal-size comparison.", ""]
        res = compare(a, b, columns)
        results.append((ratio <= MATCHED, res))
        out.append(_table(["", comp, small, "difference (pp)"], res["table"]))
        wins, ties, total, doubtful = res["wins"], res["ties"], res["total"], res["doubtful"]
        skipped = f", not counting {doubtful} whose sanity checks failed" if doubtful else ""
        out += ["", f"The compressed model is more accurate under attack in {wins} of {total} "
                    f"(attack, eps) cells{f' ({ties} ties)' if ties else ''}{skipped}; "
                    f"{len(seeds)} seed(s), so differences within the spread over seeds (or, "
                    f"with one seed, of the order of 1/√examples) are not evidence either way.",
                ""]
    if pairs:
        out += ["### All pairs", ""]
        table = []
        for (comp, small), (_, res) in zip(pairs, results):
            sa, sb = models[comp]["info"]["file_bytes"], models[small]["info"]["file_bytes"]
            mean = (f"{100 * sum(res['diffs']) / len(res['diffs']):+.2f}" if res["diffs"]
                    else "–")
            rel = (f"{res['rel_wins']} of {len(res['rel_diffs'])}, "
                   f"{100 * sum(res['rel_diffs']) / len(res['rel_diffs']):+.2f}"
                   if res["rel_diffs"] else "–")
            table.append([comp, small, f"{sb / sa:.2f}×" + ("" if max(sa, sb) / min(sa, sb)
                                                             <= MATCHED else " (not matched)"),
                          f"{res['wins']} of {res['total']}", mean, rel])
        out.append(_table(["compressed", "compact", "size ratio (compact / compressed)",
                           "cells where the compressed model is more robust",
                           "mean difference (pp)",
                           "share of clean accuracy kept: cells won, mean difference (pp)"],
                          table))
        out += ["", _statement(results, seeds, min(examples or [1])), ""]

    failed = [r for r in cells if r["sanity_passed"] is False]
    out += ["## Sanity checks", ""]
    rising = non_monotone(rows)
    out.append("Across cells: accuracy " + ("never rises with eps by more than one example "
                                            "(per model, attack and seed)." if not rising else
                                            "rises with eps in " + "; ".join(
                                                f"{m} {a} seed {s}: ε={e1:g} → ε={e2:g}"
                                                for m, a, s, e1, e2 in rising)
                                            + " — a sign of a failing attack (gradient "
                                              "masking or too few steps)."))
    if sanity_rows:
        bad = [s for s in sanity_rows if s["sanity_passed"] is False]
        out += ["", "Per model (checks of a whole model and seed, attached to each of its cells):",
                ""]
        if not bad:
            out.append(f"All {len(sanity_rows)} model-level check row(s) passed.")
        for s in bad:
            names = ", ".join(f"{c['name']}" + (f" ({c['detail']})" if c.get("detail") else "")
                              for c in s["sanity"] or [] if not c["passed"])
            out.append(f"- {s['model']} seed {s['seed']}: {names or 'failed'}")
    out.append("")
    out.append("Per cell (the checks of `attacks.sanity`, which see one attack at one eps"
               + (", with the model's own checks" if sanity_rows else "") + "):")
    out.append("")
    if not any(r["sanity_passed"] is not None for r in cells):
        out.append("Not run (study.sanity = false).")
    elif not failed:
        out.append("Every cell's sanity checks passed.")
    else:
        out.append(f"{len(failed)} cell(s) failed a check; their accuracies may overstate "
                   f"robustness:")
        out.append("")
        for r in failed:
            names = ", ".join(c["name"] + (" (model)" if c.get("scope") == "model" else "")
                              for c in r["sanity"] or [] if not c["passed"])
            out.append(f"- {r['model']} {_label((r['attack'], r['eps']))} seed {r['seed']}: "
                       f"{names}")
    if note:
        out += ["", "## Figures", "", note]
    out.append("")
    return "\n".join(out)


def _style(kind):
    return KIND_STYLES.get(kind, OTHER_STYLE)


def _grid(fig, n):
    cols = min(n, 3)
    rows = -(-n // cols)
    fig.set_size_inches(5.2 * cols, 4.2 * rows)
    return [fig.add_subplot(rows, cols, i + 1) for i in range(n)]


def _robust_axes(ax, column, xlabel):
    """A panel of robust accuracy (%) against a log-scale x: title, labels, grid, legend."""
    ax.set_xscale("log")
    ax.set_title(_label(column))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)


def _kind_scatter(ax, models, points, errs):
    """Points [(name, x, y)] of ``models`` coloured and marked by kind, labelled by name."""
    for kind in dict.fromkeys(models[n]["kind"] for n, _, _ in points):
        _, marker, colour = _style(kind)
        mine = [(n, x, y) for n, x, y in points if models[n]["kind"] == kind]
        ax.errorbar([x for _, x, _ in mine], [100 * y for _, _, y in mine],
                    yerr=[100 * errs.get(n, 0.0) for n, _, _ in mine], fmt=marker,
                    color=colour, capsize=3, label=str(kind))
        for n, x, y in mine:
            ax.annotate(n, (x, 100 * y), textcoords="offset points", xytext=(4, 4), fontsize=7)


def write_figures(rows, out_dir, *, eps=None):
    """Draw ``FIGURES`` for ``rows`` into ``out_dir`` (atomically) → the paths written (a
    figure with nothing to show is left out). Needs matplotlib (the ``plot`` extra), imported
    here only; raises ImportError without it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..atomic import atomic_path

    models, columns = summarise(rows)
    fixed = fixed_eps(columns, eps)
    attacks = list(dict.fromkeys(a for a, e in columns if e is not None))
    paths = []

    def save(fig, name):
        fig.tight_layout()
        path = os.path.join(out_dir, name)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        paths.append(path)

    if attacks:  # accuracy vs eps: a panel per bounded attack, a line per model
        fig = Figure()
        FigureCanvasAgg(fig)  # an Agg canvas of its own: no pyplot, no global backend
        for ax, attack in zip(_grid(fig, len(attacks)), attacks):
            grid = sorted(e for a, e in columns if a == attack and e is not None)
            for i, (name, m) in enumerate(models.items()):
                stats = [_stats(m["adv"].get((attack, e), [])) for e in grid]
                pts = [(e, s[0], s[1] or 0.0) for e, s in zip(grid, stats) if s[0] is not None]
                clean, spread, _ = _stats(m["clean"])
                if clean is not None and not (grid and grid[0] == 0):
                    pts.insert(0, (0.0, clean, spread or 0.0))
                if not pts:
                    continue
                line, marker, _ = _style(m["kind"])
                ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts],
                            yerr=[100 * p[2] for p in pts], linestyle=line, marker=marker,
                            color=f"C{i % 10}", capsize=3, label=f"{name} ({m['kind']})")
            ax.set_title(attack)
            ax.set_xlabel("eps (data units; 0 = clean)")
            ax.set_ylabel("accuracy under attack (%)")
            ax.set_ylim(0, 100)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        save(fig, FIGURES[0])

    robust = {a: [(n, m, m["adv"].get((a, e), [])) for n, m in models.items()]
              for a, e in fixed.items()}
    drawn = [a for a in fixed
             if any(m["info"].get("compression_ratio") and _stats(v)[0] is not None
                    for _, m, v in robust[a])]
    if drawn:  # robust accuracy at the fixed eps vs compression ratio, log x
        fig = Figure()
        FigureCanvasAgg(fig)
        for ax, attack in zip(_grid(fig, len(drawn)), drawn):
            pts = [(n, m["info"]["compression_ratio"], _stats(v)[0]) for n, m, v in robust[attack]
                   if m["info"].get("compression_ratio") and _stats(v)[0] is not None]
            _kind_scatter(ax, models, pts, {n: _stats(v)[1] or 0.0 for n, _, v in robust[attack]})
            _robust_axes(ax, (attack, fixed[attack]),
                         "compression ratio (dense float32 bytes / file bytes)")
        save(fig, FIGURES[1])

    points = {a: p for a, p in pareto_points(models, fixed).items() if p}
    if points:  # file size vs robust accuracy and the Pareto front, log x
        fig = Figure()
        FigureCanvasAgg(fig)
        for ax, (attack, pts) in zip(_grid(fig, len(points)), points.items()):
            errs = {n: _stats(models[n]["adv"][(attack, fixed[attack])])[1] or 0.0
                    for n, _, _ in pts}
            _kind_scatter(ax, models, pts, errs)
            by_name = {n: (s, a) for n, s, a in pts}
            front = [by_name[n] for n in pareto_front(pts)]
            ax.step([s for s, _ in front], [100 * a for _, a in front], where="post",
                    color="black", linewidth=1, label="Pareto front")
            _robust_axes(ax, (attack, fixed[attack]), "file size (bytes)")
        save(fig, FIGURES[2])
    return paths


def headline_section(markdown_text):
    """The "## Headline" section of a report (up to the next section) → text."""
    lines, inside = [], False
    for line in markdown_text.splitlines():
        if line.startswith("## "):
            inside = line.startswith("## Headline")
        if inside:
            lines.append(line)
    return "\n".join(lines).strip() or "The report has no headline section."


def write_report(db, out_dir, *, eps=None):
    """Write ``cells.csv``, ``report.md`` and the figures (``FIGURES``, if matplotlib is
    installed) for the database ``db`` into ``out_dir``, each atomically; ``eps`` is where
    robust accuracy is read (``fixed_eps``) → [csv path, markdown path, figure paths...]."""
    from ..atomic import atomic_path

    if not os.path.isfile(db):
        raise FileNotFoundError(f"{db}: no such results database")
    with Store(db) as store:
        rows = store.rows()
    figures, note = [], None
    if prepare(rows)[0]:  # figures first: the report never points at a missing file
        try:
            figures = write_figures(rows, out_dir, eps=eps)
        except ImportError:
            note = PLOT_NOTE
        else:
            note = None if figures else "No figure drawn: no bounded attack has results."
    paths = [os.path.join(out_dir, "cells.csv"), os.path.join(out_dir, "report.md")]
    md = markdown(rows, source=os.path.basename(db), eps=eps, note=note,
                  figures=[os.path.basename(p) for p in figures])
    for path, text in zip(paths, (csv_text(rows), md)):
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            f.write(text)
    return paths + figures
