"""A study database → ``cells.csv`` and ``report.md`` (figures: not yet).

The Markdown report holds: the models (kind, parameters, file size, compression ratio, clean
accuracy); adversarial accuracy per model × attack × eps; robust accuracy against compression
ratio; and the headline comparison — each compressed model beside the compact model nearest
in file size, per attack and eps — with the sanity checks that failed. Values are the mean over
seeds, with the standard deviation when there is more than one seed.
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


def csv_text(rows):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        flat = {**r, **(r["model_info"] or {}), **(r["versions"] or {})}
        writer.writerow([flat.get(c) for c in CSV_COLUMNS])
    return out.getvalue()


def _stats(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
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


def _size(n):
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summarise(rows):
    """{model: {"kind", "arch", "info" (of the first seed), "clean": [per seed],
    "adv": {(attack, eps): [per seed]}}} and the sorted (attack, eps) columns."""
    models, columns = {}, set()
    clean_seen = set()
    for r in rows:
        m = models.setdefault(r["model"], {"kind": r["kind"], "arch": r["arch"],
                                           "info": r["model_info"] or {}, "clean": [],
                                           "adv": defaultdict(list), "sizes": [],
                                           "failed": set()})
        if (r["model"], r["seed"]) not in clean_seen:
            clean_seen.add((r["model"], r["seed"]))
            m["clean"].append(r["clean_accuracy"])
            m["sizes"].append((r["model_info"] or {}).get("file_bytes"))
        m["adv"][(r["attack"], r["eps"])].append(r["adversarial_accuracy"])
        if r["sanity_passed"] is False:
            m["failed"].add((r["attack"], r["eps"]))
        columns.add((r["attack"], r["eps"]))
    return models, sorted(columns)


def headline_pairs(models):
    """Each compressed model with the compact model nearest to it in file size (log scale)."""
    compact = [n for n, m in models.items() if m["kind"] == "compact"]
    pairs = []
    for name, m in models.items():
        if m["kind"] != "compressed" or not compact:
            continue
        size = m["info"]["file_bytes"]
        other = min(compact, key=lambda c: abs(math.log(models[c]["info"]["file_bytes"] / size)))
        pairs.append((name, other))
    return pairs


def non_monotone(rows):
    """(model, attack, seed, eps, larger eps) where adversarial accuracy rose with eps by more
    than one example: the cross-eps check the per-cell sanity checks cannot make."""
    runs = defaultdict(list)
    for r in rows:
        runs[(r["model"], r["attack"], r["seed"])].append(r)
    out = []
    for (model, attack, seed), cells in runs.items():
        cells.sort(key=lambda r: r["eps"])
        for a, b in zip(cells, cells[1:]):
            if b["adversarial_accuracy"] > a["adversarial_accuracy"] + 1.5 / max(b["examples"], 1):
                out.append((model, attack, seed, a["eps"], b["eps"]))
    return out


def markdown(rows, *, source="the database"):
    if not rows:
        return f"# Study report\n\nNo finished cells in {source}.\n"
    models, columns = summarise(rows)
    seeds = sorted({r["seed"] for r in rows})
    studies = sorted({r["study"] for r in rows})
    examples = sorted({r["examples"] for r in rows})
    v = rows[0]["versions"] or {}
    out = [f"# Study report: {', '.join(studies)}", "",
           f"{len(rows)} cells from {source}; seeds {seeds} (values: mean over seeds, ± sample "
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

    head = [f"{a} ε={e:g}" for a, e in columns]
    out += ["## Adversarial accuracy per model, attack and eps", ""]
    out.append(_table(["model", "clean"] + head,
                      [[n, _pct(m["clean"])] + [_pct(m["adv"].get(c, [])) for c in columns]
                       for n, m in models.items()]))

    out += ["", "## Robust accuracy against compression ratio", ""]
    def ratio(n):
        return models[n]["info"].get("compression_ratio", 0)

    ranked = sorted((n for n, m in models.items() if m["kind"] in ("dense", "compressed")),
                    key=lambda n: (models[n]["arch"], ratio(n)))
    out.append(_table(["model", "arch", "ratio", "clean"] + head,
                      [[n, models[n]["arch"], f"{ratio(n):.1f}×", _pct(models[n]["clean"])]
                       + [_pct(models[n]["adv"].get(c, [])) for c in columns] for n in ranked]))

    out += ["", "## Headline: at equal size, compressed vs compact", ""]
    pairs = headline_pairs(models)
    if not pairs:
        out.append("Needs at least one compressed and one compact model in the database.")
    for comp, small in pairs:
        a, b = models[comp], models[small]
        sa, sb = a["info"]["file_bytes"], b["info"]["file_bytes"]
        ratio = max(sa, sb) / min(sa, sb)
        out += [f"### {comp} ({_size(sa)}) vs {small} ({_size(sb)})", ""]
        if ratio > 1.5:
            out += [f"**Sizes are not matched**: the {'compact' if sb > sa else 'compressed'} "
                    f"model's file is {ratio:.1f}× larger, so this is not yet the paper's "
                    f"equal-size comparison.", ""]
        table, wins, ties, total, doubtful = [], 0, 0, 0, 0
        for c in [("clean", None)] + columns:
            va = a["clean"] if c[0] == "clean" else a["adv"].get(c, [])
            vb = b["clean"] if c[0] == "clean" else b["adv"].get(c, [])
            ma, mb = _stats(va)[0], _stats(vb)[0]
            diff = "–" if ma is None or mb is None else f"{100 * (ma - mb):+.2f}"
            flagged = c in a["failed"] or c in b["failed"]
            doubtful += flagged
            if c[0] != "clean" and ma is not None and mb is not None and not flagged:
                total += 1
                wins += ma > mb
                ties += ma == mb
            label = "clean" if c[0] == "clean" else f"{c[0]} ε={c[1]:g}"
            table.append([label + (" (sanity check failed)" if flagged else ""), _pct(va),
                          _pct(vb), diff])
        out.append(_table(["", comp, small, "difference (pp)"], table))
        skipped = f", not counting {doubtful} whose sanity checks failed" if doubtful else ""
        out += ["", f"The compressed model is more accurate under attack in {wins} of {total} "
                    f"(attack, eps) cells{f' ({ties} ties)' if ties else ''}{skipped}; "
                    f"{len(seeds)} seed(s), so differences within the spread over seeds (or, "
                    f"with one seed, of the order of 1/√examples) are not evidence either way.",
                ""]

    failed = [r for r in rows if r["sanity_passed"] is False]
    out += ["## Sanity checks", ""]
    rising = non_monotone(rows)
    out.append("Across cells: accuracy " + ("never rises with eps by more than one example "
                                            "(per model, attack and seed)." if not rising else
                                            "rises with eps in " + "; ".join(
                                                f"{m} {a} seed {s}: ε={e1:g} → ε={e2:g}"
                                                for m, a, s, e1, e2 in rising)
                                            + " — a sign of a failing attack (gradient "
                                              "masking or too few steps)."))
    out.append("")
    out.append("Per cell (the checks of `attacks.sanity`, which see one attack at one eps):")
    out.append("")
    if not any(r["sanity_passed"] is not None for r in rows):
        out.append("Not run (study.sanity = false).")
    elif not failed:
        out.append("Every cell's sanity checks passed.")
    else:
        out.append(f"{len(failed)} cell(s) failed a check; their accuracies may overstate "
                   f"robustness:")
        out.append("")
        for r in failed:
            names = ", ".join(c["name"] for c in r["sanity"] if not c["passed"])
            out.append(f"- {r['model']} {r['attack']} ε={r['eps']:g} seed {r['seed']}: {names}")
    out += ["", "Figures are not drawn yet.", ""]
    return "\n".join(out)


def write_report(db, out_dir):
    """Write ``cells.csv`` and ``report.md`` for the database ``db`` into ``out_dir`` (atomic
    writes) → (csv path, markdown path)."""
    from ..atomic import atomic_path

    if not os.path.isfile(db):
        raise FileNotFoundError(f"{db}: no such results database")
    with Store(db) as store:
        rows = store.rows()
    paths = (os.path.join(out_dir, "cells.csv"), os.path.join(out_dir, "report.md"))
    for path, text in zip(paths, (csv_text(rows), markdown(rows,
                                                           source=os.path.basename(db)))):
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            f.write(text)
    return paths
