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

A database that is not a robustcnn study store (no ``meta`` table with ``schema_version``, or
tables without these columns) is refused before anything is written to it; ``Store(path,
readonly=True)`` (the report's) opens it read-only (``file:…?mode=ro``). Rows are checked as they
are read (each column's type, the JSON columns' structure): a damaged or foreign row is a
ValueError naming the database and the row, and so is every error SQLite reports.
"""

import hashlib
import json
import math
import os
import platform
import sqlite3
import time
import urllib.parse

from .. import limits

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


# The columns each table must have (what the code reads and writes).
_TABLES = {"meta": ("name", "value"), "cells": COLUMNS,
           "artifacts": ("key", "name", "kind", "path", "sha256", "info", "created")}
_TEXT = {"key", "study", "model", "model_key", "kind", "arch", "attack", "norm"}
_INTEGER = {"seed", "examples", "sanity_passed"}
_REQUIRED = {"key", "model", "model_key", "attack", "seed"}  # NOT NULL in the schema


def _read_only(path):
    """A read-only connection to the database file ``path``."""
    uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None)


def check_store(path, *, option=None):
    """Refuse (ValueError naming it, or ``option`` and it) a file that is not a robustcnn study
    database of this schema version; reads it only."""
    where = f"{option} {path}" if option else os.fspath(path)
    try:
        conn = _read_only(path)
        try:
            columns = {t: {c for (c,) in conn.execute("SELECT name FROM pragma_table_info(?)",
                                                      (t,))} for t in _TABLES}
            version = conn.execute("SELECT value FROM meta WHERE name='schema_version'") \
                .fetchone() if columns["meta"] else None
        finally:
            conn.close()
    except (sqlite3.Error, UnicodeDecodeError) as e:  # a damaged schema's text may not decode
        raise ValueError(f"{where}: not a robustcnn study database "
                         f"({limits.one_line(e)})") from None
    lacking = [t for t, cols in _TABLES.items() if not set(cols) <= columns[t]]
    if lacking or version is None:
        raise ValueError(f"{where}: not a robustcnn study database (no {', '.join(lacking)} "
                         f"table of a study store{'' if version else ', no schema_version'})")
    if str(version[0]) != str(SCHEMA_VERSION):
        raise ValueError(f"{where}: results schema version {version[0]}, this robustcnn "
                         f"reads version {SCHEMA_VERSION}")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Store:
    """An open results database (a path; its directory is created). ``readonly``: open an
    existing store read-only (nothing created or changed)."""

    def __init__(self, path, *, readonly=False):
        self.path = os.fspath(path)
        self.root = os.path.dirname(os.path.abspath(self.path))
        self.readonly = readonly
        if readonly or (os.path.isfile(self.path) and os.path.getsize(self.path)):
            if not os.path.isfile(self.path):
                raise FileNotFoundError(f"{self.path}: no such results database")
            check_store(self.path)  # before a foreign database gets our tables
        if readonly:
            self.conn = _read_only(self.path)
            return
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
        """Every cell as a dict (JSON columns decoded), in insertion order, each checked
        (``_checked_row``)."""
        sql = f"SELECT {', '.join(COLUMNS)} FROM cells"
        args = ()
        if study is not None:
            sql, args = sql + " WHERE study=?", (study,)
        out = []
        try:
            for i, values in enumerate(self.conn.execute(sql + " ORDER BY rowid", args)):
                out.append(_checked_row(dict(zip(COLUMNS, values)), f"{self.path}: row {i}"))
        except sqlite3.Error as e:
            raise ValueError(f"{self.path}: unreadable results database ({limits.one_line(e)})") \
                from None
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


def _checked_row(row, where):
    """A row of ``cells`` as ``rows`` returns it: every column of the type the code writes
    (text, integer, number, or JSON of the right shape), else ValueError naming ``where``."""
    for c in COLUMNS:
        v = row[c]
        if v is None:
            if c in _REQUIRED:
                raise ValueError(f"{where}: {c} is missing")
        elif c in _TEXT or c in _JSON:
            if not isinstance(v, str):
                raise ValueError(f"{where}: {c} is {type(v).__name__}, expected text")
        elif c in _INTEGER:
            if not isinstance(v, int) or (c == "sanity_passed" and v not in (0, 1)):
                raise ValueError(f"{where}: {c} is {v!r}, expected an integer")
        elif not isinstance(v, (int, float)):
            raise ValueError(f"{where}: {c} is {type(v).__name__}, expected a number")
    where = f"{where} ({row['key']})"
    for c in _JSON:
        if row[c] is not None:
            try:
                row[c] = json.loads(row[c])
            except (ValueError, RecursionError) as e:
                raise ValueError(f"{where}: {c} is not JSON ({limits.one_line(e)})") from None
    for c in ("settings", "metrics", "model_info", "versions"):
        if row[c] is not None and not isinstance(row[c], dict):
            raise ValueError(f"{where}: {c} is not a JSON object")
    for c in ("metrics", "model_info"):
        for k, v in (row[c] or {}).items():
            if k != "adversarial" and not (v is None or isinstance(v, (int, float, str, bool,
                                                                        list, dict))):
                raise ValueError(f"{where}: {c}.{k} is {v!r}")
    for k in ("file_bytes", "compression_ratio", "params", "dense_bytes"):
        v = (row["model_info"] or {}).get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"{where}: model_info.{k} is {v!r}, expected a number")
    for k in ("success_rate", "l2_median"):
        v = (row["metrics"] or {}).get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"{where}: metrics.{k} is {v!r}, expected a number")
    sanity = row["sanity"]
    if sanity is not None and not (isinstance(sanity, list) and all(
            isinstance(c, dict) and isinstance(c.get("name"), str)
            and isinstance(c.get("passed"), bool) for c in sanity)):
        raise ValueError(f"{where}: sanity is not a list of checks (name, passed)")
    if row["eps"] is None:  # an unbounded attack or a sanity cell: no radius
        row["eps"] = float("nan")
    row["sanity_passed"] = None if row["sanity_passed"] is None else bool(row["sanity_passed"])
    return row
