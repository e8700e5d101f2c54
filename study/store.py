"""The study's results database: SQLite (stdlib), one row per cell, written cell by cell.

Tables:

    cells      key (unique: config.Study.cell_key), study, model, model_key, kind, arch,
               settings (JSON: compression settings or training recipe), attack, norm, eps, seed,
               examples, clean_accuracy, adversarial_accuracy, success_rate, linf_mean, l2_mean,
               sanity_passed, metrics (JSON: the whole evaluate row), sanity (JSON: the checks),
               model_info (JSON: params, bytes, ratio), seconds, started, finished, versions
               (JSON: robustcnn, numpy, numba, python)
    artifacts  key (the model key), name, kind, path (relative to the database's directory),
               sha256, info (JSON), created: trained and compressed models, made once, reused
    meta       name, value: the schema version, and per study ``plan:<study>`` (JSON: its
               cells and whether it runs sanity checks, as the last run planned them), so a
               report of a partial run can say what is missing

Every write is its own transaction (``with conn``) in WAL mode with ``synchronous=FULL``: a
process killed at any point (even ``kill -9``) leaves each cell either absent or complete, and a
rerun skips the complete ones. ``INSERT OR IGNORE`` on the unique key means a cell is never
stored twice, even by two runners racing for it.
"""

import hashlib
import json
import math
import os
import platform
import sqlite3
import time

SCHEMA_VERSION = 2  # 2: eps may be NULL (unbounded attacks, sanity cells)
COLUMNS = ("key", "study", "model", "model_key", "kind", "arch", "settings", "attack", "norm",
           "eps", "seed", "examples", "clean_accuracy", "adversarial_accuracy", "success_rate",
           "linf_mean", "l2_mean", "sanity_passed", "metrics", "sanity", "model_info", "seconds",
           "started", "finished", "versions")
_JSON = {"settings", "metrics", "sanity", "model_info", "versions"}

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY, study TEXT, model TEXT NOT NULL, model_key TEXT NOT NULL, kind TEXT,
    arch TEXT, settings TEXT, attack TEXT NOT NULL, norm TEXT, eps REAL,
    seed INTEGER NOT NULL, examples INTEGER, clean_accuracy REAL, adversarial_accuracy REAL,
    success_rate REAL, linf_mean REAL, l2_mean REAL, sanity_passed INTEGER, metrics TEXT,
    sanity TEXT, model_info TEXT, seconds REAL, started REAL, finished REAL, versions TEXT);
CREATE TABLE IF NOT EXISTS artifacts (
    key TEXT PRIMARY KEY, name TEXT, kind TEXT, path TEXT NOT NULL, sha256 TEXT NOT NULL,
    info TEXT, created REAL);
INSERT OR IGNORE INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');
"""


def versions():
    """The versions a row was computed with."""
    import numba
    import numpy

    from .. import __version__

    return {"robustcnn": __version__, "numpy": numpy.__version__, "numba": numba.__version__,
            "python": platform.python_version()}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Store:
    """An open results database (a path; its directory is created)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.root = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(self.root, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        # Idempotent statements; executescript runs them as one script (autocommit mode).
        self.conn.executescript(_SCHEMA)
        found = self.conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
        if found is None or int(found[0]) != SCHEMA_VERSION:
            self.conn.close()
            raise ValueError(f"{self.path}: results schema version {found and found[0]}, this "
                             f"robustcnn writes version {SCHEMA_VERSION}")

    def _transaction(self):
        store = self

        class _Tx:
            def __enter__(self):
                store.conn.execute("BEGIN IMMEDIATE")

            def __exit__(self, kind, value, tb):
                store.conn.execute("COMMIT" if kind is None else "ROLLBACK")
                return False

        return _Tx()

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- cells ------------------------------------------------------------------------------

    def done_keys(self):
        return {k for (k,) in self.conn.execute("SELECT key FROM cells")}

    def has_cell(self, key):
        return self.conn.execute("SELECT 1 FROM cells WHERE key=?", (key,)).fetchone() is not None

    def write_cell(self, row):
        """Insert one finished cell (a dict with ``COLUMNS``' keys; missing ones are NULL) in
        its own transaction → True if written, False if a row with its key already existed."""
        if not row.get("key"):
            raise ValueError("write_cell: the row needs a key")
        row = dict(row)
        if row.get("eps") is not None and math.isnan(row["eps"]):
            row["eps"] = None
        values = [json.dumps(row.get(c), sort_keys=True) if c in _JSON and row.get(c) is not None
                  else row.get(c) for c in COLUMNS]
        with self._transaction():
            cur = self.conn.execute(
                f"INSERT OR IGNORE INTO cells ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))})", values)
        return cur.rowcount == 1

    def rows(self, study=None):
        """Every cell as a dict (JSON columns decoded), in insertion order."""
        sql = f"SELECT {', '.join(COLUMNS)} FROM cells"
        args = ()
        if study is not None:
            sql, args = sql + " WHERE study=?", (study,)
        out = []
        for values in self.conn.execute(sql + " ORDER BY rowid", args):
            row = dict(zip(COLUMNS, values))
            for c in _JSON:
                if row[c] is not None:
                    row[c] = json.loads(row[c])
            if row["eps"] is None:  # an unbounded attack or a sanity cell: no radius
                row["eps"] = float("nan")
            row["sanity_passed"] = None if row["sanity_passed"] is None else \
                bool(row["sanity_passed"])
            out.append(row)
        return out

    # -- what each study planned --------------------------------------------------------------

    def set_plan(self, study, plan):
        """Record what the study ``study`` (its name) plans: a JSON-ready dict."""
        with self._transaction():
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                              (f"plan:{study}", json.dumps(plan, sort_keys=True)))

    def plans(self):
        """{study name: its plan} for every study a run recorded."""
        return {name[len("plan:"):]: json.loads(value) for name, value in self.conn.execute(
            "SELECT name, value FROM meta WHERE name LIKE 'plan:%'")}

    # -- model artifacts --------------------------------------------------------------------

    def artifact(self, key):
        """(absolute path, info) of a stored model whose file still matches its checksum, or
        None (absent, missing file, or changed file)."""
        found = self.conn.execute("SELECT path, sha256, info FROM artifacts WHERE key=?",
                                  (key,)).fetchone()
        if found is None:
            return None
        path = os.path.join(self.root, found[0])
        if not os.path.isfile(path) or sha256_file(path) != found[1]:
            return None
        return path, json.loads(found[2] or "{}")

    def put_artifact(self, key, name, kind, path, info):
        """Record a model file (already written atomically) under ``key``."""
        rel = os.path.relpath(os.path.abspath(path), self.root)
        with self._transaction():
            self.conn.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (key, name, kind, rel, sha256_file(path),
                               json.dumps(info, sort_keys=True), time.time()))
