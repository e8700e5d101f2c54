"""The study store refuses a database that is not one of its own before writing anything to
it; the report opens it read-only; rows of the wrong types are refused as they are read."""

import sqlite3

import pytest

from robustcnn.study.report import write_report
from robustcnn.study.store import Store, check_store


def _row(i, **extra):
    return {"key": f"k{i}", "model": "m", "model_key": "mk", "attack": "fgsm", "eps": 0.1,
            "seed": 0, "adversarial_accuracy": 0.5, "metrics": {"a": 1}, **extra}


def test_a_foreign_database_is_refused_and_left_as_it_was(tmp_path):
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    before = foreign.read_bytes()
    for open_it in (lambda: Store(foreign), lambda: Store(foreign, readonly=True),
                    lambda: write_report(str(foreign), str(tmp_path / "report"))):
        with pytest.raises(ValueError, match=f"{foreign}: not a robustcnn study database"):
            open_it()
    assert foreign.read_bytes() == before
    assert not (tmp_path / "report").exists()
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 100)
    with pytest.raises(ValueError, match="not a robustcnn study database"):
        check_store(text, option="--db")


def test_a_schema_whose_text_does_not_decode_is_refused(tmp_path):
    """Found by the fuzzer: a damaged table name in the schema makes SQLite's own error
    message undecodable, so Python raises UnicodeDecodeError instead of sqlite3.Error."""
    db = tmp_path / "study.sqlite"
    Store(db).close()
    raw = db.read_bytes()
    assert raw.count(b"tablemetameta") == 1  # the schema row of table meta: type, name, table
    db.write_bytes(raw.replace(b"tablemetameta", b"tablem\xfftameta"))
    with pytest.raises(ValueError, match=f"^{db}: not a robustcnn study database \\(.*decode"):
        check_store(db)


def test_the_report_reads_a_store_without_writing_to_it(tmp_path):
    db = tmp_path / "study.sqlite"
    with Store(db) as store:
        store.write_cell(_row(0))
    before = db.read_bytes()
    db.chmod(0o444)
    try:
        with Store(db, readonly=True) as store:
            assert [r["key"] for r in store.rows()] == ["k0"]
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                store.write_cell(_row(1))
    finally:
        db.chmod(0o644)
    assert db.read_bytes() == before


def test_schema_version_is_checked(tmp_path):
    db = tmp_path / "study.sqlite"
    Store(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '7' WHERE name = 'schema_version'")
    with pytest.raises(ValueError, match="results schema version 7,"):
        Store(db, readonly=True)


@pytest.mark.parametrize("column, value, message", [
    ("adversarial_accuracy", "high", "adversarial_accuracy is str, expected a number"),
    ("seed", 1.5, "seed is 1.5, expected an integer"),
    ("metrics", "{not json", "metrics is not JSON"),
    ("metrics", "[1, 2]", "metrics is not a JSON object"),
    ("sanity", '[{"name": 1}]', "sanity is not a list of checks"),
    ("model_info", '{"file_bytes": "big"}', "model_info.file_bytes is 'big'"),
    ("model", None, "model is missing"),
])
def test_rows_of_the_wrong_types_are_refused(tmp_path, column, value, message):
    db = tmp_path / "study.sqlite"
    with Store(db) as store:
        store.write_cell(_row(0))
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA ignore_check_constraints = 1")
        if value is None:  # NOT NULL: rebuild the row without it
            conn.execute("PRAGMA writable_schema = 1")
            conn.execute("UPDATE sqlite_master SET sql = replace(sql, 'model TEXT NOT NULL', "
                         "'model TEXT') WHERE name = 'cells'")
        conn.commit()
    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE cells SET {column} = ?", (value,))
    with pytest.raises(ValueError, match=f"{db}: row 0.*{message}"):
        with Store(db, readonly=True) as store:
            store.rows()


def test_a_column_that_does_not_decode_is_one_line(tmp_path):
    """Found by the long fuzzing run: SQLite's message quotes the undecodable text, newlines
    and all."""
    db = tmp_path / "study.sqlite"
    with Store(db) as store:
        store.write_cell(_row(0))
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE cells SET model_info = CAST(X'ff0a7b7d0a' AS TEXT)")
    with Store(db, readonly=True) as store:
        with pytest.raises(ValueError, match=f"^{db}: unreadable results database .*model_info")\
                as error:
            store.rows()
    assert "\n" not in str(error.value)
