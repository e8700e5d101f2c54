"""The report as Markdown, one function per section.

The sections: the models (kind, parameters, file size, compression ratio, clean accuracy);
adversarial accuracy per model × attack × eps (and, for unbounded attacks such as DeepFool or
C&W, the success rate and median L2 perturbation); robust accuracy against compression ratio;
adversarial-aware compression with its paired tests (``aware``, when a model's making was
adversarial); the Pareto front of file
size against robust accuracy; the headline comparison — each compressed model beside the compact
models of matched file size, per attack and eps, then all pairs in one table and a statement
generated from it; the design of arms at matched bytes and the stage ablation (``design``);
and the sanity checks that failed. Values are the mean over seeds, with the
standard deviation when there is more than one seed. The statistical sections (``headline``:
every cell with its 95% intervals; the headline attack's paired tests and the sentences drawn
from them) and the provenance (``provenance``: config hashes, code versions, packages,
machines) have modules of their own.
"""

from .. import stats
from .aware import aware_section
from .design import ablation_section, design_section
from .figures import FIGURES
from .headline import Z95, intervals_section, sampling_sentence, tests_section
from .provenance import mixed_warning, provenance_section
from .tables import (MATCHED, column_label, compare, file_size, fixed_eps, headline_pairs,
                     markdown_table, non_monotone, number, pareto_front, pareto_points, percent,
                     prepare, summarise)


def markdown(rows, *, source="the database", figures=(), note=None, eps=None, plans=None):
    """The report as Markdown. ``figures``: the file names of ``FIGURES`` that were drawn
    (embedded beside their tables); ``note``: a line on figures not drawn; ``eps``: where robust
    accuracy is read (``fixed_eps``); ``plans``: {study: {"cells", "sanity", "sanity_cells"}}
    as the runs recorded them (``Store.plans``), so that a partial run's report says what is
    missing."""
    plans = {k: v for k, v in (plans or {}).items()
             if k in {str(r["study"]) for r in rows}}
    cells, sanity_rows = prepare(rows)
    if not cells and not sanity_rows:
        return f"# Study report\n\nNo finished cells in {source}.\n"
    models, columns = summarise(rows)
    fixed = fixed_eps(columns, eps)
    seeds = sorted({r["seed"] for r in rows})
    examples = sorted({r["examples"] for r in cells if r["examples"]})
    sections = [_introduction(rows, cells, sanity_rows, source, seeds, examples, plans),
                _models(models),
                _accuracy(models, columns, figures),
                intervals_section(models, columns),
                _robust_vs_ratio(models, columns, fixed, figures),
                aware_section(models, columns, fixed),
                _pareto(models, fixed, figures),
                _headline(models, columns, seeds, examples),
                _design(models, columns, figures),
                ablation_section(models, columns),
                _sanity(rows, cells, sanity_rows, plans),
                provenance_section(rows),
                _figures_note(note)]
    # Each section is a list of lines; one blank line between sections.
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


def headline_section(markdown_text):
    """The "## Headline" section of a report (up to the next section) → text."""
    lines, inside = [], False
    for line in markdown_text.splitlines():
        if line.startswith("## "):
            inside = line.startswith("## Headline")
        if inside:
            lines.append(line)
    return "\n".join(lines).strip() or "The report has no headline section."


_table = markdown_table


def _value(m, column):
    """A model's entry in an attack column: robust accuracy, or for an unbounded attack its
    success rate / median L2 perturbation."""
    if column[1] is not None:
        return percent(m["adv"].get(column, []))
    return f"{percent(m['success'].get(column, []))} / {number(m['l2_median'].get(column, []))}"


def _heading(column):
    return column_label(column) + (": success / median L2" if column[1] is None else "")


def _ratio(models, name):
    return models[name]["info"].get("compression_ratio", 0)


def _introduction(rows, cells, sanity_rows, source, seeds, examples, plans):
    studies = sorted({str(r["study"]) for r in rows})
    v = rows[0]["versions"] or {}
    counted = f"{len(cells)} attack cells" + (
        f" and {len(sanity_rows)} model sanity cells" if sanity_rows else "")
    planned = sum(p.get("cells", 0) for p in plans.values())
    if plans and len(studies) == len(plans) and len(rows) < planned:
        counted += (f" ({len(rows)} of the {planned} cells planned: {planned - len(rows)} "
                    f"still to run, `robustcnn study` runs them; the tables below show only "
                    f"what has run)")
    elif plans and len(studies) == len(plans):
        counted += f" (all {planned} cells planned)" if len(rows) == planned else ""
    warning = mixed_warning(rows)
    return [f"# Study report: {', '.join(studies)}", "",
            f"{counted} from {source}; seeds {seeds} (values: mean over seeds, ± sample "
            f"standard deviation when there are several; 95% confidence intervals and paired "
            f"tests in their own sections); {', '.join(map(str, examples))} "
            f"attacked test images per cell; accuracies in %. robustcnn {v.get('robustcnn')}, "
            f"NumPy {v.get('numpy')}, Numba {v.get('numba')}, Python {v.get('python')}."] \
        + (["", sampling_sentence(examples)] if examples else []) \
        + (["", warning] if warning else [])


def _models(models):
    table = _table(
        ["model", "kind", "architecture", "parameters", "file size", "compression ratio",
         "clean accuracy"],
        [[n, m["kind"], m["arch"], f"{m['info'].get('params', 0):,}",
          file_size(m["info"].get("file_bytes", 0)),
          f"{m['info'].get('compression_ratio', 0):.1f}×", percent(m["clean"])]
         for n, m in models.items()])
    return ["## Models", "", table, "",
            "File size is the `.rcnn` file; the compression ratio is the model's parameters as "
            "dense float32 over its file size (about 1× for dense and compact models)."]


def _accuracy(models, columns, figures):
    out = ["## Adversarial accuracy per model, attack and eps", "",
           _table(["model", "clean"] + [_heading(c) for c in columns],
                  [[n, percent(m["clean"])] + [_value(m, c) for c in columns]
                   for n, m in models.items()])]
    if any(c[1] is None for c in columns):
        out += ["", "Unbounded attacks have no eps: their columns show the success rate (%) and "
                    "the median L2 size of the perturbations found (larger = more robust)."]
    if FIGURES[0] in figures:
        out += ["", f"![Accuracy against eps per model, one panel per attack]({FIGURES[0]})"]
    return out


def _robust_vs_ratio(models, columns, fixed, figures):
    ranked = sorted(models, key=lambda n: (str(models[n]["arch"]), _ratio(models, n)))
    at = ", ".join(f"{a} ε={e:g}" for a, e in fixed.items()) or "none"
    out = ["## Robust accuracy against compression ratio", "",
           _table(["model", "kind", "arch", "ratio", "clean"] + [_heading(c) for c in columns],
                  [[n, models[n]["kind"], models[n]["arch"], f"{_ratio(models, n):.1f}×",
                    percent(models[n]["clean"])] + [_value(models[n], c) for c in columns]
                   for n in ranked]), "",
           f"The figures and the Pareto front read robust accuracy at one eps per attack: {at}."]
    if FIGURES[1] in figures:
        out += ["", f"![Robust accuracy against compression ratio]({FIGURES[1]})"]
    return out


def _design(models, columns, figures):
    out = design_section(models, columns)
    if FIGURES[3] in figures:
        out += ["", f"![Robust against clean accuracy, per method]({FIGURES[3]})"]
    return out


def _pareto(models, fixed, figures):
    front_rows = []
    for attack, pts in pareto_points(models, fixed).items():
        by_name = {n: (s, a) for n, s, a in pts}
        column = (attack, fixed[attack])
        for n in pareto_front(pts):
            flag = " (sanity check failed)" if column in models[n]["failed"] else ""
            front_rows.append([column_label(column), n + flag, models[n]["kind"],
                               file_size(by_name[n][0]), percent(models[n]["adv"][column])])
    out = ["## Pareto front: file size against robust accuracy", "",
           "A model is on the front when no other model is both no larger and at least as "
           "robust (and better in one): the models worth their size.", "",
           _table(["attack", "model", "kind", "file size", "robust accuracy"], front_rows)
           if front_rows else "No bounded attack with file sizes and results."]
    if FIGURES[2] in figures:
        out += ["", f"![File size against robust accuracy, the Pareto front]({FIGURES[2]})"]
    return out


def _headline(models, columns, seeds, examples):
    out = ["## Headline: at equal size, compressed vs compact", "",
           "Each compressed model (never trained adversarially) beside every compact, "
           "distilled or low-rank model (never trained adversarially) whose file is within "
           f"{MATCHED:g}× of its size (or the nearest one, flagged, when none is)."]
    pairs = headline_pairs(models)
    if not pairs:
        return out + ["", "Needs at least one compressed and one compact model in the database."]
    out += [""] + tests_section(models, columns, examples)
    results = []
    for comp, small in pairs:
        lines, matched, res = _pair(models, comp, small, columns, seeds)
        out += [""] + lines
        results.append((matched, res))
    return out + [""] + _all_pairs(models, pairs, results, seeds, min(examples or [1]))


def _pair(models, comp, small, columns, seeds):
    """One headline pair's subsection → (lines, sizes matched, ``compare`` result)."""
    a, b = models[comp], models[small]
    sa, sb = a["info"]["file_bytes"], b["info"]["file_bytes"]
    ratio = max(sa, sb) / min(sa, sb)
    out = [f"### {comp} ({file_size(sa)}) vs {small} ({file_size(sb)})", ""]
    if ratio > MATCHED:
        out += [f"**Sizes are not matched**: the {'compact' if sb > sa else 'compressed'} "
                f"model's file is {ratio:.1f}× larger, so this is not yet the paper's "
                f"equal-size comparison.", ""]
    res = compare(a, b, columns)
    wins, ties, total, doubtful = res["wins"], res["ties"], res["total"], res["doubtful"]
    skipped = f", not counting {doubtful} whose sanity checks failed" if doubtful else ""
    out += [_table(["", comp, small, "difference (pp)"], res["table"]), "",
            f"The compressed model is more accurate under attack in {wins} of {total} "
            f"(attack, eps) cells{f' ({ties} ties)' if ties else ''}{skipped}; "
            f"{len(seeds)} seed(s), so differences within the spread over seeds (or, "
            f"with one seed, within the sampling noise of a cell: see the introduction) are "
            f"not evidence either way."]
    return out, ratio <= MATCHED, res


def _all_pairs(models, pairs, results, seeds, examples):
    """The table of every headline pair and the statement drawn from it."""
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
    return ["### All pairs", "",
            _table(["compressed", "compact", "size ratio (compact / compressed)",
                    "cells where the compressed model is more robust", "mean difference (pp)",
                    "share of clean accuracy kept: cells won, mean difference (pp)"], table),
            "", _statement(results, seeds, examples)]


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
    noise = 100 * Z95 * stats.max_sampling_error(max(examples, 1))
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
            f"the sampling noise of one cell (95%: ±{noise:.1f} pp at most, on {examples} "
            f"images), with "
            f"{len(seeds)} seed(s).{relative(basis)}")


def _sanity(rows, cells, sanity_rows, plans):
    rising = non_monotone(rows)
    out = ["## Sanity checks", "",
           "Across cells: accuracy " + (
               "never rises with eps by more than one example (per model, attack and seed)."
               if not rising else
               "rises with eps in " + "; ".join(f"{m} {a} seed {s}: ε={e1:g} → ε={e2:g}"
                                                 for m, a, s, e1, e2 in rising)
               + " — a sign of a failing attack (gradient masking or too few steps).")]
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
    out += ["", "Per cell (the checks of `attacks.sanity`, which see one attack at one eps"
            + (", with the model's own checks" if sanity_rows else "") + "):", ""]
    failed = [r for r in cells if r["sanity_passed"] is False]
    unchecked = sum(r["sanity_passed"] is None for r in cells)
    sanity_planned = any(p.get("sanity") for p in plans.values())
    if unchecked == len(cells):
        out.append("Not run yet: the model sanity cells are among those still to run."
                   if sanity_planned else "Not run (study.sanity = false).")
    elif not failed:
        out.append("Every cell's sanity checks passed." if not unchecked else
                   f"Every checked cell's sanity checks passed; {unchecked} of {len(cells)} "
                   f"cells have none yet (their model's sanity cell is still to run).")
    else:
        out += [f"{len(failed)} cell(s) failed a check; their accuracies may overstate "
                f"robustness:", ""]
        for r in failed:
            names = ", ".join(c["name"] + (" (model)" if c.get("scope") == "model" else "")
                              for c in r["sanity"] or [] if not c["passed"])
            out.append(f"- {r['model']} {column_label((r['attack'], r['eps']))} seed "
                       f"{r['seed']}: {names}")
    return out


def _figures_note(note):
    return ["## Figures", "", note] if note else []
