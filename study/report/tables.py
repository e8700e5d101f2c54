"""The study's rows shaped for the report: attack cells with their model's sanity checks, per
model summaries (mean and spread over seeds), the size-matched headline pairs and their
comparison, the Pareto front, and the value formats of the tables.

Rows are cells of ``store.Store``. Three kinds of attack name need care: an unbounded attack
has no eps (stored as NaN, None, or 0 with an unbounded attack's name); a transfer attack is
labelled like ``transfer:fgsm<-lenet5`` (``config.attack_label``) and has an eps; and a row with
attack ``config.SANITY`` holds checks of a whole (model, seed), attached here to each of that
model's cells for that seed.
"""

import math
from collections import defaultdict

from .. import stats as study_stats
from ..config import COMPACT_KINDS, COMPRESSED_KINDS, SANITY, is_unbounded_attack

# Two files within this factor of each other count as the same size.
MATCHED = 1.5


def missing(v):
    """None or NaN: no value."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def is_unbounded(attack, eps):
    """True for a cell without an eps: NaN or None, or 0 for an attack that takes no eps."""
    if missing(eps):
        return True
    if eps != 0:
        return False
    return is_unbounded_attack(attack)


def prepare(rows):
    """The attack cells of ``rows`` (copies): eps None for unbounded attacks, and the checks of
    the (model, seed)'s sanity row, if any, appended to ``sanity`` (each marked
    ``"scope": "model"``) and folded into ``sanity_passed``. → (cells, sanity rows)."""
    checks = {(r["model"], r["seed"]): r for r in rows if r["attack"] == SANITY}
    cells = []
    for r in rows:
        if r["attack"] == SANITY:
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


# -- statistics over seeds, and how the tables show them ---------------------------------

def stats(values):
    """(mean, sample standard deviation or None, count) of the values that are not missing
    (``study.stats.t_interval``'s)."""
    interval = study_stats.t_interval([v for v in values if not missing(v)])
    if interval is None:
        return None, None, 0
    return interval.mean, interval.std, interval.n


def percent(values):
    """Mean ± spread over seeds of fractions, in %: ``60.00 ± 14.14``; – when none."""
    mean, std, n = stats(values)
    if mean is None:
        return "–"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def number(values):
    """Mean ± spread over seeds to 3 significant digits; – when none."""
    mean, std, n = stats(values)
    if mean is None:
        return "–"
    return f"{mean:.3g}" + (f" ± {std:.2g}" if std is not None else "")


def markdown_table(header, rows):
    """A Markdown table; ``|`` in a cell escaped."""
    def cells(row):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |"

    return "\n".join([cells(header), "|" + "|".join("---" for _ in header) + "|"]
                     + [cells(r) for r in rows])


def file_size(n):
    """Bytes as KiB or MiB."""
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def column_label(column):
    """An (attack, eps) column's heading: ``fgsm ε=0.1``, ``deepfool (unbounded)``."""
    attack, eps = column
    return f"{attack} (unbounded)" if eps is None else f"{attack} ε={eps:g}"


def _column_order(column):
    attack, eps = column
    return (eps is None, attack, 0.0 if eps is None else eps)


# -- the summaries the tables and figures read -------------------------------------------

def summarise(rows):
    """{model: {"kind", "arch", "info" and "settings" (of the first seed), "clean": [per seed],
    "adv": {(attack, eps): [per seed]}, "success", "l2_median": {(attack, None): [per seed]},
    "failed": {(attack, eps) whose checks failed for some seed}, and by seed for the paired
    statistics: "clean_by_seed": {seed: accuracy}, "by_seed": {(attack, eps): {seed:
    accuracy}}, "outcomes": {(attack, eps): {seed: store.Outcomes or None}}, "within":
    {(unbounded attack, threshold): {seed: accuracy counting only perturbations within the
    threshold}}, "options": {(attack, eps): the attack's options the study file set}}} and the
    sorted (attack, eps) columns, bounded ones first; eps is None for an unbounded attack.
    Sanity rows are not columns; their checks count for every cell of their (model, seed)."""
    models, columns = {}, set()
    clean_seen = set()
    for r in prepare(rows)[0]:
        m = models.setdefault(r["model"], {"kind": r["kind"], "arch": r["arch"],
                                           "info": r["model_info"] or {},
                                           "settings": r.get("settings") or {}, "clean": [],
                                           "adv": defaultdict(list), "sizes": [],
                                           "success": defaultdict(list),
                                           "l2_median": defaultdict(list), "failed": set(),
                                           "clean_by_seed": {}, "by_seed": defaultdict(dict),
                                           "outcomes": defaultdict(dict),
                                           "within": defaultdict(dict), "options": {}})
        if (r["model"], r["seed"]) not in clean_seen and not missing(r["clean_accuracy"]):
            clean_seen.add((r["model"], r["seed"]))
            m["clean"].append(r["clean_accuracy"])
            m["clean_by_seed"][r["seed"]] = r["clean_accuracy"]
            m["sizes"].append((r["model_info"] or {}).get("file_bytes"))
        column = (r["attack"], r["eps"])
        m["adv"][column].append(r["adversarial_accuracy"])
        m["by_seed"][column][r["seed"]] = r["adversarial_accuracy"]
        m["outcomes"][column][r["seed"]] = r.get("outcomes")
        options = (r.get("metrics") or {}).get("options")
        if isinstance(options, dict) and options:
            m["options"][column] = options
        if r["eps"] is None:
            metrics = r.get("metrics") or {}
            success = r["success_rate"]
            m["success"][column].append(metrics.get("success_rate") if missing(success)
                                        else success)
            m["l2_median"][column].append(metrics.get("l2_median"))
            within = metrics.get("accuracy_within")
            for threshold, v in (within.items() if isinstance(within, dict) else ()):
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    m["within"][(r["attack"], threshold)][r["seed"]] = v
        if r["sanity_passed"] is False:
            m["failed"].add(column)
        columns.add(column)
    return models, sorted(columns, key=_column_order)


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
            acc = stats(m["adv"].get((attack, e), []))[0]
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
        if r["eps"] is not None and not missing(r["adversarial_accuracy"]):
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
    clean_a, clean_b = stats(a["clean"])[0], stats(b["clean"])[0]
    for c in [("clean", None)] + columns:
        if c[0] != "clean" and c[1] is None:
            va, vb = a["l2_median"].get(c, []), b["l2_median"].get(c, [])
            ma, mb = stats(va)[0], stats(vb)[0]
            diff = "–" if ma is None or mb is None else f"{ma - mb:+.3g} (L2)"
            out["table"].append([f"{c[0]} (unbounded) median L2", number(va), number(vb), diff])
            continue
        va = a["clean"] if c[0] == "clean" else a["adv"].get(c, [])
        vb = b["clean"] if c[0] == "clean" else b["adv"].get(c, [])
        ma, mb = stats(va)[0], stats(vb)[0]
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
        label = "clean" if c[0] == "clean" else column_label(c)
        out["table"].append([label + (" (sanity check failed)" if flagged else ""), percent(va),
                             percent(vb), diff])
    return out
