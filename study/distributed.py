"""Run a study's models and cells on a Dask distributed cluster.

The client (this process) keeps the database: it sends each model build and each cell to the
cluster as a task, and writes every result as it arrives — model files beside the database,
rows in their own transactions — so a killed client loses no finished work and a rerun skips
it. Workers need only ``pip install robustcnn[distributed]``: the data travels with the tasks
(scattered once) and models travel as ``.rcnn`` bytes, so no shared file system is assumed.

A build waits for its parents' builds (Dask passes their futures' results); a cell waits for
the models it evaluates. Results are the same rows as in-process: every step is the same pure
function (``models.make_model``, ``cell.evaluate_cell``) with the same seeds.
"""

from ..progress import progress_bar
from .cell import evaluate_cell
from .data import load_data
from .models import make_model, needed_models, net_from_bytes, store_model, stored_model


def _client(scheduler):
    from distributed import Client

    if isinstance(scheduler, Client):
        return scheduler, False
    if not isinstance(scheduler, str) or "://" not in scheduler:
        raise ValueError(f"--scheduler: expected an address such as tcp://host:8786, got "
                         f"{scheduler!r}")
    try:
        return Client(scheduler, timeout="30s"), True
    except OSError as e:
        raise ValueError(f"--scheduler {scheduler}: cannot connect to a Dask scheduler "
                         f"there ({e})") from None


def _build_task(study, name, seed, data, *parents):
    names = study.model(name).parents
    return make_model(study, name, seed, data, dict(zip(names, (b for b, _ in parents))))


def _cell_task(study, cell, test, *models):
    names = study.cell_models(cell)
    nets = {n: net_from_bytes(blob, n) for n, (blob, _) in zip(names, models)}
    infos = {n: info for n, (_, info) in zip(names, models)}
    return evaluate_cell(study, cell, nets, infos, *test)


def run_distributed(study, store, todo, scheduler, *, progress=False, log=None):
    """Run the cells ``todo`` ([(key, cell)], none yet in ``store``) on the cluster at
    ``scheduler`` → rows written."""
    from distributed import as_completed

    say = log or (lambda line: None)
    client, owned = _client(scheduler)
    try:
        data = load_data(study)
        data_f = client.scatter(data, broadcast=True)
        test_f = client.scatter(data[2:], broadcast=True)
        models, builds = {}, {}
        for name, seed in needed_models(study, [c for _, c in todo]):
            found = stored_model(store, study, name, seed)
            if found is not None:
                [models[(name, seed)]] = client.scatter([found])
                continue
            parents = [models[(p, seed)] for p in study.model(name).parents]
            future = client.submit(_build_task, study, name, seed, data_f, *parents,
                                   key=f"build-{name}-s{seed}-{study.model_key(name, seed)}",
                                   pure=False)
            models[(name, seed)] = future
            builds[future] = (name, seed)
        cells = {}
        for key, cell in todo:
            args = [models[(m, cell.seed)] for m in study.cell_models(cell)]
            cells[client.submit(_cell_task, study, cell, test_f, *args, key=f"cell-{key}",
                                pure=False)] = (key, cell)
        if builds:
            say(f"building {len(builds)} model(s) on the cluster")
        written = 0
        with progress_bar(enabled=progress, total=len(cells), desc="study", unit="cell",
                          position=0) as bar:
            for future in as_completed(list(builds) + list(cells)):
                if future in builds:
                    name, seed = builds[future]
                    blob, info = future.result()
                    store_model(store, study, name, seed, blob, info)
                    say(f"model {name} (seed {seed}) built on the cluster")
                    continue
                key, cell = cells[future]
                row = dict(future.result())
                row["key"] = key
                written += store.write_cell(row)
                bar.set_postfix_str(cell.describe())
                bar.update()
        return written
    finally:
        if owned:
            client.close()
