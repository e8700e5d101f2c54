"""The study's results database: SQLite (stdlib), one row per cell, written cell by cell.

Tables:

    cells      key (unique: config.Study.cell_key), study, model, model_key, kind, arch,
               settings (JSON: compression settings or training recipe), attack, norm, eps, seed,
               examples, clean_accuracy, adversarial_accuracy, success_rate, linf_mean, l2_mean,
               sanity_passed, metrics (JSON: the whole evaluate row), sanity (JSON: the checks),
               model_info (JSON: params, bytes, ratio), seconds, started, finished, versions
               (JSON: robustcnn, numpy, numba, python), outcomes (JSON: per test image, right
               or not on the clean and on the adversarial image, and for an unbounded attack
               (version 4) the size of each image's perturbation: ``encode_outcomes``; NULL
               for sanity cells and for cells of a version-2 database), provenance (JSON: the
               config's hash, the code version and the machine: ``provenance.cell_provenance``)
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
readonly=True)`` (the report's) opens it read-only (``file:…?mode=ro``). A version-2 database
(before per-image outcomes and provenance) reads with those columns NULL; opened for writing
it gains the two columns and becomes version 4. A version-3 database (outcomes without
perturbation sizes) reads with ``Outcomes.sizes`` None; opened for writing it becomes version 4
(nothing to add: the sizes are an optional key of the outcomes). Rows are checked as they are read (each
column's type, the JSON columns' structure, the outcomes' encoding and their agreement with
the row's accuracies): a damaged or foreign row is a ValueError naming the database and the
row, and so is every error SQLite reports.
"""

import base64
import binascii
import hashlib
import json
import math
import os
import platform
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass

import numpy as np

from .. import limits

# 2: eps may be NULL (unbounded attacks, sanity cells); 3: outcomes and provenance columns;
# 4: an unbounded attack's outcomes hold each image's perturbation size (older readers refuse
# the key, hence the version).
SCHEMA_VERSION = 4
READABLE_VERSIONS = (2, 3, 4)
ADDED_IN_3 = ("outcomes", "provenance")
COLUMNS = ("key", "study", "model", "model_key", "kind", "arch", "settings", "attack", "norm",
           "eps", "seed", "examples", "clean_accuracy", "adversarial_accuracy", "success_rate",
           "linf_mean", "l2_mean", "sanity_passed", "metrics", "sanity", "model_info", "seconds",
           "started", "finished", "versions") + ADDED_IN_3
_JSON = {"settings", "metrics", "sanity", "model_info", "versions", "outcomes", "provenance"}

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY, study TEXT, model TEXT NOT NULL, model_key TEXT NOT NULL, kind TEXT,
    arch TEXT, settings TEXT, attack TEXT NOT NULL, norm TEXT, eps REAL,
    seed INTEGER NOT NULL, examples INTEGER, clean_accuracy REAL, adversarial_accuracy REAL,
    success_rate REAL, linf_mean REAL, l2_mean REAL, sanity_passed INTEGER, metrics TEXT,
    sanity TEXT, model_info TEXT, seconds REAL, started REAL, finished REAL, versions TEXT,
    outcomes TEXT, provenance TEXT);
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


@dataclass(frozen=True, eq=False)
class Outcomes:
    """Per test image of one cell: its index in the test set, whether the model was right
    on the clean and on the adversarial image, and (an unbounded attack's, schema version 4;
    else None) the size of its perturbation in the attack's norm."""

    images: np.ndarray       # (n,) int64, test-set indices, distinct
    clean: np.ndarray        # (n,) bool
    adversarial: np.ndarray  # (n,) bool
    sizes: np.ndarray = None  # (n,) float32 ‖x' − x‖, or None

    def __eq__(self, other):
        return isinstance(other, Outcomes) and all(
            np.array_equal(getattr(self, f), getattr(other, f))
            for f in ("images", "clean", "adversarial")) and (
            (self.sizes is None) == (other.sizes is None)
            and (self.sizes is None or np.array_equal(self.sizes, other.sizes)))

    __hash__ = None


def encode_outcomes(images, clean_ok, adv_ok, sizes=None):
    """The ``outcomes`` column's JSON-ready value: {"images": [[start, stop], ...] (the test-set
    indices as runs of consecutive ones, in the order of the flags), "clean", "adversarial":
    the flags bit-packed (``numpy.packbits``, zero-padded to whole bytes) in base64, and with
    ``sizes`` (per image, finite and >= 0) "sizes": them as little-endian float32 in base64}."""
    images = np.asarray(images, np.int64).ravel()
    clean_ok, adv_ok = np.asarray(clean_ok, bool).ravel(), np.asarray(adv_ok, bool).ravel()
    if not len(images) == len(clean_ok) == len(adv_ok):
        raise ValueError(f"outcomes: {len(images)} images, {len(clean_ok)} clean and "
                         f"{len(adv_ok)} adversarial flags")
    if len(images) and (images.min() < 0 or len(np.unique(images)) != len(images)):
        raise ValueError("outcomes: image indices must be distinct and >= 0")
    breaks = np.flatnonzero(np.diff(images) != 1) + 1
    starts = np.concatenate([[0], breaks]) if len(images) else np.zeros(0, np.int64)
    stops = np.concatenate([breaks, [len(images)]]) if len(images) else starts
    runs = [[int(images[a]), int(images[b - 1]) + 1] for a, b in zip(starts, stops)]

    def bits(flags):
        return base64.b64encode(np.packbits(flags).tobytes()).decode("ascii")

    out = {"images": runs, "clean": bits(clean_ok), "adversarial": bits(adv_ok)}
    if sizes is not None:
        sizes = np.asarray(sizes, "<f4").ravel()
        if len(sizes) != len(images) or not (np.isfinite(sizes).all() and (sizes >= 0).all()):
            raise ValueError(f"outcomes: {len(sizes)} sizes for {len(images)} images, or a "
                             f"size not finite and >= 0")
        out["sizes"] = base64.b64encode(sizes.tobytes()).decode("ascii")
    return out


def decode_outcomes(value, where, *, examples=None):
    """``Outcomes`` from the ``outcomes`` column's decoded JSON ``value``; ``examples``, when
    known, is the count it must have. A damaged value is a ValueError naming ``where``."""
    if not isinstance(value, dict) or not {"images", "clean", "adversarial"} <= set(value) \
            or not set(value) <= {"images", "clean", "adversarial", "sizes"}:
        raise ValueError(f"{where}: outcomes is not an object of images, clean, adversarial "
                         f"(and sizes)")
    flags = {}
    for name in ("clean", "adversarial"):
        try:
            flags[name] = np.frombuffer(base64.b64decode(value[name], validate=True), np.uint8)
        except (TypeError, ValueError, binascii.Error) as e:
            raise ValueError(f"{where}: outcomes.{name} is not base64 "
                             f"({limits.one_line(e)})") from None
    runs = value["images"]
    if not (isinstance(runs, list) and all(
            isinstance(r, list) and len(r) == 2 and all(type(v) is int for v in r)
            and 0 <= r[0] < r[1] for r in runs)):
        raise ValueError(f"{where}: outcomes.images is not a list of [start, stop) runs")
    n = sum(b - a for a, b in runs)
    if examples is not None and n != examples:
        raise ValueError(f"{where}: outcomes hold {n} images, the row {examples} examples")
    for name, packed in flags.items():
        if len(packed) != -(-n // 8) or np.unpackbits(packed)[n:].any():
            raise ValueError(f"{where}: outcomes.{name} holds {len(packed)} bytes, not the "
                             f"{n} bits of its images")
    images = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in runs]) if runs \
        else np.zeros(0, np.int64)
    if len(np.unique(images)) != n:
        raise ValueError(f"{where}: outcomes.images repeats an image")
    sizes = None
    if "sizes" in value:
        try:
            raw = base64.b64decode(value["sizes"], validate=True)
        except (TypeError, ValueError, binascii.Error) as e:
            raise ValueError(f"{where}: outcomes.sizes is not base64 "
                             f"({limits.one_line(e)})") from None
        if len(raw) != 4 * n:
            raise ValueError(f"{where}: outcomes.sizes holds {len(raw)} bytes, not the {n} "
                             f"float32 sizes of its images")
        sizes = np.frombuffer(raw, "<f4").astype(np.float32)
        if not (np.isfinite(sizes).all() and (sizes >= 0).all()):
            raise ValueError(f"{where}: outcomes.sizes holds a size not finite and >= 0")
    return Outcomes(images, *(np.unpackbits(flags[k])[:n].astype(bool)
                              for k in ("clean", "adversarial")), sizes)


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
    lacking = [t for t, cols in _TABLES.items()
               if not set(cols) - set(ADDED_IN_3) <= columns[t]]
    if lacking or version is None:
        raise ValueError(f"{where}: not a robustcnn study database (no {', '.join(lacking)} "
                         f"table of a study store{'' if version else ', no schema_version'})")
    if str(version[0]) not in map(str, READABLE_VERSIONS):
        raise ValueError(f"{where}: results schema version {version[0]}, this robustcnn "
                         f"reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    if str(version[0]) != "2" and not set(ADDED_IN_3) <= columns["cells"]:
        raise ValueError(f"{where}: not a robustcnn study database (schema version "
                         f"{version[0]} without its {', '.join(ADDED_IN_3)} columns)")


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
            self._read_columns()
            return
        os.makedirs(self.root, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        # Idempotent statements; executescript runs them as one script (autocommit mode).
        self.conn.executescript(_SCHEMA)
        self._upgrade()
        found = self.conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
        if found is None or int(found[0]) != SCHEMA_VERSION:
            self.conn.close()
            raise ValueError(f"{self.path}: results schema version {found and found[0]}, this "
                             f"robustcnn writes version {SCHEMA_VERSION}")
        self._read_columns()

    def _upgrade(self):
        """A version-2 store gains the columns of version 3 (its cells keep them NULL), and a
        version-2 or 3 one becomes version 4 (outcomes may hold sizes), in one transaction:
        two runners opening it at once upgrade it once."""
        with self._transaction():
            found = self.conn.execute("SELECT value FROM meta WHERE name='schema_version'") \
                .fetchone()
            if found is None or str(found[0]) not in ("2", "3"):
                return
            have = {c for (c,) in self.conn.execute(
                "SELECT name FROM pragma_table_info('cells')")}
            for column in ADDED_IN_3:
                if column not in have:
                    self.conn.execute(f"ALTER TABLE cells ADD COLUMN {column} TEXT")
            self.conn.execute("UPDATE meta SET value=? WHERE name='schema_version'",
                              (str(SCHEMA_VERSION),))

    def _read_columns(self):
        """The columns of ``COLUMNS`` this database has (a version-2 one lacks
        ``ADDED_IN_3``)."""
        have = {c for (c,) in self.conn.execute("SELECT name FROM pragma_table_info('cells')")}
        self.columns = tuple(c for c in COLUMNS if c in have)

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
        if isinstance(row.get("outcomes"), Outcomes):
            o = row["outcomes"]
            row["outcomes"] = encode_outcomes(o.images, o.clean, o.adversarial, o.sizes)
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
        sql = f"SELECT {', '.join(self.columns)} FROM cells"
        args = ()
        if study is not None:
            sql, args = sql + " WHERE study=?", (study,)
        out = []
        absent = dict.fromkeys(c for c in COLUMNS if c not in self.columns)  # version 2: NULL
        try:
            for i, values in enumerate(self.conn.execute(sql + " ORDER BY rowid", args)):
                out.append(_checked_row({**dict(zip(self.columns, values)), **absent},
                                        f"{self.path}: row {i}"))
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
    for c in ("settings", "metrics", "model_info", "versions", "provenance"):
        if row[c] is not None and not isinstance(row[c], dict):
            raise ValueError(f"{where}: {c} is not a JSON object")
    for k in ("code", "machine"):
        v = (row["provenance"] or {}).get(k)
        if v is not None and not isinstance(v, dict):
            raise ValueError(f"{where}: provenance.{k} is {v!r}, expected a JSON object")
    if row["outcomes"] is not None:
        row["outcomes"] = outcomes = decode_outcomes(row["outcomes"], where,
                                                     examples=row["examples"])
        for c, flags in (("clean_accuracy", outcomes.clean),
                         ("adversarial_accuracy", outcomes.adversarial)):
            if len(flags) and row[c] is not None and abs(flags.mean() - row[c]) > 1e-9:
                raise ValueError(f"{where}: outcomes give {c} {flags.mean():.6g}, the row "
                                 f"{row[c]:.6g}")
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
