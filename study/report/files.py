"""The report's files: ``cells.csv`` (every row), ``report.md`` and the figures, written
atomically from a study database."""

import csv
import io
import os

from ... import plotting
from ...atomic import atomic_path
from ..provenance import code_label
from ..store import Store
from .figures import write_figures
from .markdown import markdown
from .tables import prepare

CSV_COLUMNS = ("study", "model", "kind", "arch", "attack", "norm", "eps", "seed", "examples",
               "clean_accuracy", "adversarial_accuracy", "success_rate", "linf_mean", "l2_mean",
               "sanity_passed", "params", "file_bytes", "compression_ratio", "seconds",
               "robustcnn", "numpy", "numba", "python", "key", "code_version", "config_hash")
PLOT_NOTE = "Figures need matplotlib: `pip install robustcnn[plot]`."


def csv_text(rows):
    """Every row (sanity rows too) as CSV with ``CSV_COLUMNS``; model info, versions and
    provenance (``provenance.code_label``, the config's hash) flattened into columns. An
    attack row's ``sanity_passed`` is its verdict as the report gives it: with its model's
    sanity checks folded in (``tables.prepare``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    folded = {r["key"]: r["sanity_passed"] for r in prepare(rows)[0]}
    for r in rows:
        r = dict(r, sanity_passed=folded.get(r["key"], r["sanity_passed"]))
        origin = r.get("provenance") or {}
        flat = {**r, **(r["model_info"] or {}), **(r["versions"] or {}),
                "code_version": code_label(origin["code"]) if origin.get("code") else None,
                "config_hash": origin.get("config")}
        writer.writerow([flat.get(c) for c in CSV_COLUMNS])
    return out.getvalue()


def write_report(db, out_dir, *, eps=None):
    """Write ``cells.csv``, ``report.md`` and the figures (``FIGURES``, if matplotlib is
    installed) for the database ``db`` into ``out_dir``, each atomically; ``eps`` is where
    robust accuracy is read (``fixed_eps``) → [csv path, markdown path, figure paths...]."""
    if not os.path.isfile(db):
        raise FileNotFoundError(f"{db}: no such results database")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"{out_dir}: is a file, not a directory for the report")
    with Store(db, readonly=True) as store:  # refuses a database that is not a study store
        rows = store.rows()
        plans = store.plans()
    figures, note = [], None
    if prepare(rows)[0]:  # figures first: the report never points at a missing file
        try:
            figures = write_figures(rows, out_dir, eps=eps)
        except plotting.PlotUnavailable:
            note = PLOT_NOTE
        else:
            note = None if figures else "No figure drawn: no bounded attack has results."
    paths = [os.path.join(out_dir, "cells.csv"), os.path.join(out_dir, "report.md")]
    md = markdown(rows, source=os.path.basename(db), eps=eps, note=note,
                  figures=[os.path.basename(p) for p in figures], plans=plans)
    for path, text in zip(paths, (csv_text(rows), md)):
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            f.write(text)
    return paths + figures
