"""The report's figures (PNG): accuracy against eps, robust accuracy against compression ratio
(one curve per method: ``design.method``), file size against robust accuracy with the Pareto
front, and robust against clean accuracy. Bands and error bars are 95% intervals
(``inference.interval_bounds``: over seeds, or with one seed over test images).

They need matplotlib (the ``plot`` extra), imported only when drawing (``write_figures``,
through robustcnn.plotting).
"""

import os

from ... import plotting
from .design import method, reference_dense, size_reduction
from .inference import interval_bounds
from .tables import column_label, fixed_eps, pareto_front, pareto_points, summarise

FIGURES = ("accuracy_vs_eps.png", "robust_vs_ratio.png", "pareto_size_vs_robust.png",
           "robust_vs_clean.png")
# Line style, marker and colour per model kind (config.KINDS); any other kind gets OTHER_STYLE.
KIND_STYLES = {"dense": ("-", "o", "C0"), "compressed": ("--", "s", "C1"),
               "compact": (":", "^", "C2"), "distilled": ("-.", "D", "C3"),
               "lowrank": ((0, (5, 1)), "v", "C4"), "finetuned": ((0, (3, 1, 1, 1)), "P", "C5"),
               "structured": ((0, (4, 2)), "*", "C6")}
OTHER_STYLE = ((0, (1, 2)), "X", "C7")


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
    plotting.finish_percent_axes(ax, xlabel, "robust accuracy (%)", column_label(column),
                                 legend_size=7, grid="both")


def _kind_scatter(ax, models, points, bounds):
    """Points [(name, x, y)] of ``models`` coloured and marked by kind, labelled by name, with
    95% error bars from ``bounds`` ({name: (mean, low, high)})."""
    for kind in dict.fromkeys(models[n]["kind"] for n, _, _ in points):
        _, marker, colour = _style(kind)
        mine = [(n, x, y) for n, x, y in points if models[n]["kind"] == kind]
        ax.errorbar([x for _, x, _ in mine], [100 * y for _, _, y in mine],
                    yerr=_yerr([bounds.get(n) or (y, None, None) for n, _, y in mine]),
                    fmt=marker, color=colour, capsize=3, label=str(kind))
        for n, x, y in mine:
            ax.annotate(n, (x, 100 * y), textcoords="offset points", xytext=(4, 4), fontsize=7)


def _band(ax, points, colour):
    """A 95% band under a curve of points [(x, mean, low, high)] where the intervals are
    known (fractions; drawn in %)."""
    known = [p for p in points if p[2] is not None]
    if known:
        ax.fill_between([p[0] for p in known], [100 * p[2] for p in known],
                        [100 * p[3] for p in known], color=colour, alpha=0.2, linewidth=0)


def _yerr(points):
    """Asymmetric error bars (in %) of points [(…, mean, low, high)]: 0 where unknown (and
    never negative: a percentile interval need not hold its mean)."""
    return [[max(100 * (p[-3] - p[-2]), 0.0) if p[-2] is not None else 0.0 for p in points],
            [max(100 * (p[-1] - p[-3]), 0.0) if p[-1] is not None else 0.0 for p in points]]


def _by_method(ax, models, points):
    """Curves [(name, x, mean, low, high)] one per method (``design.method``): markers by
    kind, a line through the method's points in x order, its 95% band."""
    methods = {}
    for p in points:
        methods.setdefault(method(models, p[0]), []).append(p)
    for i, (name, pts) in enumerate(methods.items()):
        pts.sort(key=lambda p: p[1])
        line, marker, _ = _style(models[pts[0][0]]["kind"])
        colour = f"C{i % 10}"
        ax.plot([p[1] for p in pts], [100 * p[2] for p in pts], linestyle=line, marker=marker,
                color=colour, label=str(name))
        _band(ax, [p[1:] for p in pts], colour)
        for n, x, y, _, _ in pts:
            ax.annotate(n, (x, 100 * y), textcoords="offset points", xytext=(4, 4), fontsize=7)


def write_figures(rows, out_dir, *, eps=None):
    """Draw ``FIGURES`` for ``rows`` into ``out_dir`` (atomically) → the paths written (a
    figure with nothing to show is left out). Needs matplotlib (the ``plot`` extra), imported
    here only; raises plotting.PlotUnavailable without it."""
    models, columns = summarise(rows)
    fixed = fixed_eps(columns, eps)
    attacks = list(dict.fromkeys(a for a, e in columns if e is not None))
    paths = []

    def save(fig, name):
        paths.append(plotting.save_png(fig, os.path.join(out_dir, name)))

    if attacks:  # accuracy vs eps: a panel per bounded attack, a line per model
        fig = plotting.figure("the report's figures")
        for ax, attack in zip(_grid(fig, len(attacks)), attacks):
            grid = sorted(e for a, e in columns if a == attack and e is not None)
            for i, (name, m) in enumerate(models.items()):
                pts = [(e, *b) for e in grid
                       for b in [interval_bounds(m, (attack, e))] if b is not None]
                clean = interval_bounds(m, ("clean", None))
                if clean is not None and not (grid and grid[0] == 0):
                    pts.insert(0, (0.0, *clean))
                if not pts:
                    continue
                line, marker, _ = _style(m["kind"])
                ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], linestyle=line,
                        marker=marker, color=f"C{i % 10}", label=f"{name} ({m['kind']})")
                _band(ax, pts, f"C{i % 10}")
            plotting.finish_percent_axes(ax, "eps (data units; 0 = clean)",
                                         "accuracy under attack (%)", attack, legend_size=7)
        save(fig, FIGURES[0])

    reference = reference_dense(models)
    ratio_points = {}  # attack → [(name, size reduction, robust mean, low, high)]
    for attack, e in fixed.items():
        ratio_points[attack] = [(n, x, *b) for n in models
                                for x in [size_reduction(models, n, reference)]
                                for b in [interval_bounds(models[n], (attack, e))]
                                if x and b is not None]
    drawn = [a for a in fixed if ratio_points[a]]
    if drawn:  # robust accuracy at the fixed eps vs size reduction, a curve per method, log x
        fig = plotting.figure("the report's figures")
        for ax, attack in zip(_grid(fig, len(drawn)), drawn):
            _by_method(ax, models, ratio_points[attack])
            _robust_axes(ax, (attack, fixed[attack]),
                         f"compression ratio ({reference}'s file bytes / the model's)"
                         if reference else "compression ratio (dense float32 bytes / file "
                                           "bytes)")
        save(fig, FIGURES[1])

    points = {a: p for a, p in pareto_points(models, fixed).items() if p}
    if points:  # file size vs robust accuracy and the Pareto front, log x
        fig = plotting.figure("the report's figures")
        for ax, (attack, pts) in zip(_grid(fig, len(points)), points.items()):
            bounds = {n: interval_bounds(models[n], (attack, fixed[attack])) for n, _, _ in pts}
            _kind_scatter(ax, models, pts, bounds)
            by_name = {n: (s, a) for n, s, a in pts}
            front = [by_name[n] for n in pareto_front(pts)]
            ax.step([s for s, _ in front], [100 * a for _, a in front], where="post",
                    color="black", linewidth=1, label="Pareto front")
            _robust_axes(ax, (attack, fixed[attack]), "file size (bytes)")
        save(fig, FIGURES[2])

    clean_points = {}  # attack → [(name, clean mean, low, high, robust mean, low, high)]
    for attack, e in fixed.items():
        clean_points[attack] = [(n, *c, *b) for n in models
                                for c in [interval_bounds(models[n], ("clean", None))]
                                for b in [interval_bounds(models[n], (attack, e))]
                                if c is not None and b is not None]
    drawn = [a for a in fixed if clean_points[a]]
    if drawn:  # robust against clean accuracy: is it just accuracy?
        fig = plotting.figure("the report's figures")
        for ax, attack in zip(_grid(fig, len(drawn)), drawn):
            methods = {}
            for p in clean_points[attack]:
                methods.setdefault(method(models, p[0]), []).append(p)
            for i, (name, pts) in enumerate(methods.items()):
                _, marker, _ = _style(models[pts[0][0]]["kind"])
                ax.errorbar([100 * p[1] for p in pts], [100 * p[4] for p in pts],
                            xerr=_yerr([p[1:4] for p in pts]),
                            yerr=_yerr([p[4:] for p in pts]), fmt=marker, color=f"C{i % 10}",
                            capsize=3, label=str(name))
                for p in pts:
                    ax.annotate(p[0], (100 * p[1], 100 * p[4]), textcoords="offset points",
                                xytext=(4, 4), fontsize=7)
            ax.plot([0, 100], [0, 100], color="grey", linewidth=0.8, linestyle="--")
            ax.set_xlim(0, 100)
            plotting.finish_percent_axes(ax, "clean accuracy (%)", "robust accuracy (%)",
                                         column_label((attack, fixed[attack])), legend_size=7)
        save(fig, FIGURES[3])
    return paths
