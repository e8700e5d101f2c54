"""The report's figures (PNG): accuracy against eps, robust accuracy against compression ratio,
and file size against robust accuracy with the Pareto front.

They need matplotlib (the ``plot`` extra), imported only when drawing (``write_figures``,
through robustcnn.plotting).
"""

import os

from ... import plotting
from .tables import column_label, fixed_eps, pareto_front, pareto_points, stats, summarise

FIGURES = ("accuracy_vs_eps.png", "robust_vs_ratio.png", "pareto_size_vs_robust.png")
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
                per_eps = [stats(m["adv"].get((attack, e), [])) for e in grid]
                pts = [(e, s[0], s[1] or 0.0) for e, s in zip(grid, per_eps) if s[0] is not None]
                clean, spread, _ = stats(m["clean"])
                if clean is not None and not (grid and grid[0] == 0):
                    pts.insert(0, (0.0, clean, spread or 0.0))
                if not pts:
                    continue
                line, marker, _ = _style(m["kind"])
                ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts],
                            yerr=[100 * p[2] for p in pts], linestyle=line, marker=marker,
                            color=f"C{i % 10}", capsize=3, label=f"{name} ({m['kind']})")
            plotting.finish_percent_axes(ax, "eps (data units; 0 = clean)",
                                         "accuracy under attack (%)", attack, legend_size=7)
        save(fig, FIGURES[0])

    robust = {a: [(n, m, m["adv"].get((a, e), [])) for n, m in models.items()]
              for a, e in fixed.items()}
    drawn = [a for a in fixed
             if any(m["info"].get("compression_ratio") and stats(v)[0] is not None
                    for _, m, v in robust[a])]
    if drawn:  # robust accuracy at the fixed eps vs compression ratio, log x
        fig = plotting.figure("the report's figures")
        for ax, attack in zip(_grid(fig, len(drawn)), drawn):
            pts = [(n, m["info"]["compression_ratio"], stats(v)[0]) for n, m, v in robust[attack]
                   if m["info"].get("compression_ratio") and stats(v)[0] is not None]
            _kind_scatter(ax, models, pts, {n: stats(v)[1] or 0.0 for n, _, v in robust[attack]})
            _robust_axes(ax, (attack, fixed[attack]),
                         "compression ratio (dense float32 bytes / file bytes)")
        save(fig, FIGURES[1])

    points = {a: p for a, p in pareto_points(models, fixed).items() if p}
    if points:  # file size vs robust accuracy and the Pareto front, log x
        fig = plotting.figure("the report's figures")
        for ax, (attack, pts) in zip(_grid(fig, len(points)), points.items()):
            errs = {n: stats(models[n]["adv"][(attack, fixed[attack])])[1] or 0.0
                    for n, _, _ in pts}
            _kind_scatter(ax, models, pts, errs)
            by_name = {n: (s, a) for n, s, a in pts}
            front = [by_name[n] for n in pareto_front(pts)]
            ax.step([s for s, _ in front], [100 * a for _, a in front], where="post",
                    color="black", linewidth=1, label="Pareto front")
            _robust_axes(ax, (attack, fixed[attack]), "file size (bytes)")
        save(fig, FIGURES[2])
    return paths
