"""study/distributed.py: the grid on a Dask ``LocalCluster`` gives the rows of an in-process
run, and the database (rows and model files) is written by the client."""

import pytest
from study_helpers import tiny_config

from robustcnn.study.config import parse_config
from robustcnn.study.runner import run_study
from robustcnn.study.store import Store

distributed = pytest.importorskip("distributed")

TIMINGS = ("seconds", "started", "finished")


def _rows(db):
    """The rows without their timings, NaN eps (no radius) as None so that rows compare."""
    with Store(db) as store:
        rows = store.rows()
    rows = [{k: (None if k == "eps" and v != v else v) for k, v in r.items() if k not in TIMINGS}
            for r in rows]
    return sorted(rows, key=lambda r: r["key"])


@pytest.fixture(scope="module")
def cluster():
    # One single-threaded worker process: what a remote worker is, without the network.
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None, worker_dashboard_address=None,
                                  env={"NUMBA_NUM_THREADS": "1"}) as c:
        yield c


def test_dask_path_gives_the_same_rows_as_in_process(tiny_mnist, tmp_path, cluster):
    raw = tiny_config(tiny_mnist, sanity=True)
    raw["attacks"].append({"name": "fgsm", "eps": [0.2], "source": "dense"})
    study = parse_config(raw)
    local = run_study(study, tmp_path / "local" / "db.sqlite", progress=False,
                      log=lambda s: None)
    lines = []
    remote = run_study(study, tmp_path / "dask" / "db.sqlite", progress=False,
                       log=lines.append, scheduler=cluster.scheduler_address)
    assert local["written"] == remote["written"] == len(study.cells()) == 17
    assert _rows(tmp_path / "local" / "db.sqlite") == _rows(tmp_path / "dask" / "db.sqlite")
    assert sum("built on the cluster" in line for line in lines) == 3
    # The client wrote the model files beside its database, with the same bytes.
    local_models = sorted(p.name for p in (tmp_path / "local" / "models").iterdir())
    dask_models = sorted(p.name for p in (tmp_path / "dask" / "models").iterdir())
    assert local_models == dask_models and len(dask_models) == 3
    for name in dask_models:
        assert (tmp_path / "local" / "models" / name).read_bytes() == \
            (tmp_path / "dask" / "models" / name).read_bytes()

    # A rerun on the cluster finds everything done; new eps reuse the stored models.
    assert run_study(study, tmp_path / "dask" / "db.sqlite", progress=False,
                     scheduler=cluster.scheduler_address)["written"] == 0
    raw["attacks"][0]["eps"].append(0.1)
    lines.clear()
    more = run_study(parse_config(raw), tmp_path / "dask" / "db.sqlite", progress=False,
                     log=lines.append, scheduler=cluster.scheduler_address)
    assert more["written"] == 3 + 3  # FGSM at 0.1 and the sanity cells (their eps changed)
    assert not any("built" in line for line in lines)


def test_a_bad_scheduler_address_is_a_clear_error(tiny_mnist, tmp_path):
    study = parse_config(tiny_config(tiny_mnist))
    with pytest.raises(ValueError, match="--scheduler: expected an address"):
        run_study(study, tmp_path / "db.sqlite", progress=False, scheduler="localhost")
