"""study/store.py: one row per cell, written in its own transaction; a run killed with SIGKILL
(in the middle of a cell, or of a write) resumes without losing or duplicating a cell."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from robustcnn.study.store import Store

# Drives runner.run_cells with a fake cell that, on the first run, announces itself and hangs in
# cell 2 until killed. mode "write": hangs instead inside an open write transaction.
_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from robustcnn.study.runner import run_cells
    from robustcnn.study.store import Store

    db, marker, mode = sys.argv[1:4]
    first_run = not os.path.exists(marker)

    def cell(i):
        if i == 2 and first_run and mode == "cell":
            open(marker, "w").close()
            time.sleep(120)
        return {"study": "fake", "model": "m", "model_key": "k", "attack": "fgsm",
                "eps": i / 10, "seed": 0, "adversarial_accuracy": 1 - i / 10,
                "metrics": {"i": i}}

    store = Store(db)
    if mode == "write" and first_run:
        store.conn.execute("BEGIN IMMEDIATE")
        store.conn.execute("INSERT INTO cells (key, model, model_key, attack, eps, seed) "
                           "VALUES ('cell-3', 'm', 'k', 'fgsm', 0.3, 0)")
        open(marker, "w").close()
        time.sleep(120)
    run_cells(store, [(f"cell-{i}", i) for i in range(5)], cell)
    store.close()
""")


def _wait_for(path, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the run never reached the slow cell")
        time.sleep(0.05)


@pytest.mark.parametrize("mode", ["cell", "write"])
def test_resume_after_sigkill_has_exactly_one_row_per_cell(tmp_path, mode):
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    db, marker = tmp_path / "study.sqlite", tmp_path / "started"
    args = [sys.executable, str(script), str(db), str(marker), mode]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(marker, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with Store(db) as store:
        before = sorted(r["key"] for r in store.rows())
    # Killed in cell 2: cells 0 and 1 were committed. Killed inside the write: nothing was.
    assert before == (["cell-0", "cell-1"] if mode == "cell" else [])

    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with Store(db) as store:
        rows = store.rows()
    assert sorted(r["key"] for r in rows) == [f"cell-{i}" for i in range(5)]
    by_key = {r["key"]: r for r in rows}
    assert by_key["cell-3"]["metrics"] == {"i": 3}  # the complete row, not the killed one's
    assert by_key["cell-3"]["adversarial_accuracy"] == pytest.approx(0.7)


def test_write_cell_never_duplicates(tmp_path):
    with Store(tmp_path / "db.sqlite") as store:
        row = {"key": "a", "model": "m", "model_key": "k", "attack": "fgsm", "eps": 0.1,
               "seed": 0, "metrics": {"x": 1}, "sanity_passed": True}
        assert store.write_cell(row) is True
        assert store.write_cell({**row, "metrics": {"x": 2}}) is False
        (stored,) = store.rows()
        assert stored["metrics"] == {"x": 1} and stored["sanity_passed"] is True
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with pytest.raises(ValueError, match="needs a key"):
            store.write_cell({"model": "m"})


def test_artifact_with_a_changed_file_is_not_reused(tmp_path):
    path = tmp_path / "models" / "m.rcnn"
    path.parent.mkdir()
    path.write_bytes(b"model bytes")
    with Store(tmp_path / "db.sqlite") as store:
        assert store.artifact("k") is None
        store.put_artifact("k", "m", "dense", path, {"params": 3})
        found, info = store.artifact("k")
        assert os.path.samefile(found, path) and info == {"params": 3}
        path.write_bytes(b"other bytes")
        assert store.artifact("k") is None
        path.unlink()
        assert store.artifact("k") is None


def test_a_database_of_another_schema_version_is_refused(tmp_path):
    db = tmp_path / "db.sqlite"
    Store(db).close()
    import sqlite3

    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value='99' WHERE name='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(ValueError, match="schema version 99"):
        Store(db)
