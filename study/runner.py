"""Run a study's grid: models made once (``models.py``: cached as ``.rcnn`` files recorded in
the database), then one database row per cell, written by this process cell by cell.

``run_study(study, db)`` runs in this process; ``run_study(..., scheduler="tcp://host:port")``
sends the model builds and the cells to a Dask distributed cluster (``distributed.py``; workers
need only robustcnn and its ``distributed`` extra): models travel as ``.rcnn`` bytes, and the
results come back to this process, which alone writes the database and the model files. Either
way the cells the database already holds are skipped, so a killed run resumes where it stopped;
``run_cells`` is that loop on its own (any cell function), which the resume test drives
directly.
"""

import sys
import time

from ..progress import progress_bar
from .cell import evaluate_cell
from .config import SANITY, Cell
from .data import load_data
from .estimate import duration, estimate_grid
from .models import obtain_model
from .provenance import code_version
from .store import Store

# The study's bar when it counts estimated seconds: tqdm's time left is then the estimated work
# left at the rate measured so far (real seconds per estimated second), so it corrects itself.
ESTIMATE_BAR = ("{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of estimated work "
                "[{elapsed}<{remaining}{postfix}]")


def run_cells(store, items, cell_fn, *, progress=False, describe=str, weights=None):
    """For each (key, cell) of ``items`` not yet in ``store``: ``row = cell_fn(cell)``, then the
    row is written under ``key`` in its own transaction → number of rows written.

    A cell killed before its write leaves nothing; the next run does it again. ``weights``
    (key → estimated seconds, ``estimate.Estimate.per_cell``) make the study's bar count
    estimated seconds of work instead of cells, so its time left weighs a model's training
    and an attack of 40 steps by what they cost; each cell's own estimate is shown beside it.
    """
    done = store.done_keys()
    pending = [(k, c) for k, c in items if k not in done]
    written = 0
    if weights is None:
        bar = progress_bar(enabled=progress, total=len(pending), desc="study", unit="cell",
                           position=0)
    else:
        bar = progress_bar(enabled=progress, total=sum(weights[k] for k, _ in pending),
                           desc="study", position=0, bar_format=ESTIMATE_BAR)
    with bar as overall:
        for i, (key, cell) in enumerate(pending, 1):
            label = describe(cell)
            if weights is not None:
                label = f"cell {i}/{len(pending)}: {label}, est. {duration(weights[key])}"
            overall.set_postfix_str(label)
            row = dict(cell_fn(cell))
            row["key"] = key
            written += store.write_cell(row)
            overall.update(1 if weights is None else weights[key])
    return written


def run_study(study, db, *, limit=None, progress=True, log=None, scheduler=None,
              estimate=False):
    """Run the cells of ``study`` missing from the database ``db`` (a path), at most ``limit``
    of them, in this process or (``scheduler``: a Dask scheduler address or a
    ``distributed.Client``) on a Dask cluster → {"cells": total, "done_before": n, "written":
    n, "remaining": n, "seconds": s, "estimated_seconds": s or None}.

    ``estimate``: in this process, first print (``log``) the estimated CPU time of the cells to
    run (``estimate.estimate_grid``: a calibration of under 2 s at LeNet sizes once the kernels
    are compiled) and weigh the progress bar's time left by it."""
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    t0 = time.perf_counter()
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    code_version()  # read at the start: a checkout changed during the run is not recorded
    with Store(db) as store:
        cells = [(study.cell_key(c), c) for c in study.cells()]
        store.set_plan(study.name, {"cells": len(cells), "sanity": study.sanity,
                                    "sanity_cells": sum(c.attack == SANITY for _, c in cells)})
        done = store.done_keys()
        pending = [(k, c) for k, c in cells if k not in done]
        todo = pending[:limit] if limit else pending
        written, estimated = 0, None
        if todo and scheduler is not None:
            from .distributed import run_distributed

            written = run_distributed(study, store, todo, scheduler, progress=progress, log=say)
        elif todo:
            data = load_data(study)
            xt, yt = data[2], data[3]
            loaded = {}

            def cell_fn(cell):
                names = study.cell_models(cell)
                for name in names:
                    if (name, cell.seed) not in loaded:
                        if len(loaded) > 8:  # a few models in memory at a time
                            loaded.clear()
                        loaded[(name, cell.seed)] = obtain_model(
                            study, store, name, cell.seed, data, progress=progress, log=say)
                nets = {n: loaded[(n, cell.seed)][0] for n in names}
                infos = {n: loaded[(n, cell.seed)][1] for n in names}
                return evaluate_cell(study, cell, nets, infos, xt, yt, progress=progress)

            weights = None
            if estimate:
                found = estimate_grid(study, todo, data, stored=lambda name, seed: store.artifact(
                    study.model_key(name, seed)) is not None)
                for line in found.lines(todo):
                    say(line)
                weights, estimated = found.per_cell(study, todo), found.total
            written = run_cells(store, todo, cell_fn, progress=progress, describe=Cell.describe,
                                weights=weights)
        remaining = len(pending) - written
    return {"cells": len(cells), "done_before": len(cells) - len(pending), "written": written,
            "remaining": remaining, "seconds": time.perf_counter() - t0,
            "estimated_seconds": estimated}
