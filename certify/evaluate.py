"""Certified accuracy of a model: the share of test images it provably classifies right within a
radius, by IBP, CROWN-IBP (L∞) or randomized smoothing (L2); what ``robustcnn certify`` runs."""

import time

import numpy as np

from .crown_ibp import margin_bounds
from .smoothing import certified_accuracy, certify as smoothing_certify

METHODS = {"ibp": "linf", "crown-ibp": "linf", "smoothing": "l2"}


def certify_model(net, x, y, method, eps_list, *, sigma=None, n0=100, n=10_000, alpha=0.001,
                  clip=(0.0, 1.0), batch_size=None, seed=0, progress=None):
    """Certified accuracy of ``net`` on (x, y) at each radius of ``eps_list`` → a JSON-ready
    dict: ``method``, ``norm``, ``examples``, ``clean_accuracy``, ``rows`` (one per eps:
    ``eps``, ``certified_accuracy``, ``seconds``) and, for smoothing, the per-example
    ``radius`` and ``prediction`` (the certified-accuracy curve) with ``sigma``, ``n0``, ``n``,
    ``alpha``.

    ``method``: "ibp" and "crown-ibp" certify L∞ balls of radius eps inside ``clip`` (each
    eps its own bound pass); "smoothing" runs CERTIFY once per example with noise ``sigma``
    and reads the certified accuracy at each L2 radius eps off the radii. ``batch_size``:
    examples per bound pass (default 64) or noisy copies per forward pass (default 1000).
    """
    if method not in METHODS:
        raise ValueError(f"certify: unknown method {method!r}; use one of {sorted(METHODS)}")
    eps_list = [float(e) for e in eps_list]
    if not eps_list or any(not (np.isfinite(e) and e >= 0) for e in eps_list):
        raise ValueError(f"certify: eps must be a non-empty list of finite radii >= 0, got "
                         f"{eps_list}")
    y = np.asarray(y, dtype=np.int64)
    clean_ok = net.predict(x) == y
    result = {"method": method, "norm": METHODS[method], "examples": int(len(x)),
              "clean_accuracy": float(clean_ok.mean()) if len(x) else float("nan"),
              "dtype": net.dtype.name, "rows": []}
    if method == "smoothing":
        if sigma is None:
            raise ValueError("certify: smoothing needs --sigma (the noise's standard deviation)")
        t0 = time.perf_counter()
        res = smoothing_certify(net, x, y, sigma=sigma, n0=n0, n=n, alpha=alpha,
                                batch_size=batch_size or 1000, seed=seed, progress=progress)
        seconds = time.perf_counter() - t0
        accs = certified_accuracy(res, eps_list)
        result.update(sigma=float(sigma), n0=int(n0), n=int(n), alpha=float(alpha),
                      seconds=seconds, forward_passes=int(len(x) * (n0 + n)),
                      radius=res["radius"].tolist(), prediction=res["prediction"].tolist(),
                      correct=res["correct"].tolist(),
                      abstained=int((res["prediction"] < 0).sum()))
        result["rows"] = [{"eps": e, "certified_accuracy": a} for e, a in zip(eps_list, accs)]
        return result
    for eps in eps_list:
        t0 = time.perf_counter()
        bounds, _ = margin_bounds(net, x, y, eps, method=method, clip=clip,
                                  batch_size=batch_size or 64)
        verified = (bounds > 0).all(axis=1) & clean_ok
        result["rows"].append({"eps": eps, "certified_accuracy": float(verified.mean()),
                               "seconds": time.perf_counter() - t0,
                               "median_worst_margin": float(np.median(bounds.min(axis=1)))})
        if progress is not None:
            progress(1)
    return result


def format_certification(result):
    """The rows as text: radius, certified accuracy, seconds."""
    norm = "L∞" if result["norm"] == "linf" else "L2"
    lines = [f"{'eps (' + norm + ')':>10}  {'certified':>9}"
             + ("  seconds" if result["method"] != "smoothing" else "")]
    for r in result["rows"]:
        line = f"{r['eps']:10.4f}  {100 * r['certified_accuracy']:8.2f}%"
        if "seconds" in r:
            line += f"  {r['seconds']:7.1f}"
        lines.append(line)
    if result["method"] == "smoothing":
        lines.append(f"(sigma {result['sigma']:g}, n0 {result['n0']}, n {result['n']:,}, alpha "
                     f"{result['alpha']:g}: {result['abstained']} of {result['examples']} "
                     f"abstained; {result['forward_passes']:,} forward passes in "
                     f"{result['seconds']:.1f} s, "
                     f"{result['forward_passes'] / max(result['seconds'], 1e-9):,.0f}/s)")
    return "\n".join(lines)


CSV_COLUMNS = ("method", "norm", "eps", "examples", "clean_accuracy", "certified_accuracy",
               "seconds")


def csv_rows(result):
    """One CSV row per radius (``CSV_COLUMNS``)."""
    out = []
    for r in result["rows"]:
        row = {**r, "method": result["method"], "norm": result["norm"],
               "examples": result["examples"], "clean_accuracy": result["clean_accuracy"]}
        out.append([row.get(c, result.get(c, "")) for c in CSV_COLUMNS])
    return out


def plot_certification(result, path, *, title=None):
    """Certified accuracy vs radius as a PNG (matplotlib, the ``plot`` extra; written
    atomically): the points of the rows, and for smoothing the whole curve of the radii."""
    from .. import plotting

    fig = plotting.figure("plot_certification", (5.5, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    if result["method"] == "smoothing":
        radius = np.asarray(result["radius"])
        correct = np.asarray(result["correct"], dtype=bool)
        top = max(float(radius.max(initial=0)), max(r["eps"] for r in result["rows"]))
        grid = np.linspace(0, top * 1.05 or 1.0, 200)
        ax.plot(grid, [100 * np.mean(correct & (radius >= g)) for g in grid],
                label=f"smoothing, sigma {result['sigma']:g}")
    rows = sorted(result["rows"], key=lambda r: r["eps"])
    ax.plot([r["eps"] for r in rows], [100 * r["certified_accuracy"] for r in rows], "o",
            label=result["method"])
    plotting.finish_percent_axes(
        ax, f"radius ({'L∞' if result['norm'] == 'linf' else 'L2'}, data units)",
        "certified accuracy (%)", title)
    plotting.save_png(fig, path)


__all__ = ["certify_model", "format_certification", "csv_rows", "plot_certification",
           "CSV_COLUMNS", "METHODS"]
