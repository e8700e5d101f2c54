"""study/store.py, schema versions 3 and 4: per-image outcomes bit-packed with their image
indices, checked as they are read; a version-2 database still reads (its cells without
outcomes) and is upgraded when opened for writing; an unbounded attack's perturbation sizes
per image (version 4), and a version-3 database reads without them and becomes version 4."""

import base64
import json
import sqlite3

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robustcnn.study.store import (SCHEMA_VERSION, Outcomes, Store, decode_outcomes,
                                   encode_outcomes)


def _row(i, images, clean, adv, **extra):
    return {"key": f"k{i}", "model": "m", "model_key": "mk", "attack": "fgsm", "eps": 0.1,
            "seed": 0, "examples": len(images), "clean_accuracy": float(np.mean(clean)),
            "adversarial_accuracy": float(np.mean(adv)), "metrics": {"a": 1},
            "outcomes": encode_outcomes(images, clean, adv), **extra}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=0, max_size=70),
       st.integers(0, 10_000), st.randoms(use_true_random=False))
def test_outcomes_round_trip_any_images_and_flags(flags, offset, random):
    images = [offset + i for i in range(len(flags))]
    random.shuffle(images)  # any order, runs or not
    clean, adv = [c for c, _ in flags], [a for _, a in flags]
    value = json.loads(json.dumps(encode_outcomes(images, clean, adv)))
    o = decode_outcomes(value, "here", examples=len(flags))
    assert o.images.tolist() == images
    assert o.clean.tolist() == clean and o.adversarial.tolist() == adv
    # Bit-packed: a byte holds eight images.
    assert len(base64.b64decode(value["clean"])) == -(-len(flags) // 8)


def test_consecutive_images_are_one_run():
    value = encode_outcomes(np.arange(5, 505), np.ones(500, bool), np.zeros(500, bool))
    assert value["images"] == [[5, 505]]
    assert encode_outcomes([3, 4, 9, 2], [1, 1, 1, 1], [0, 0, 0, 0])["images"] == \
        [[3, 5], [9, 10], [2, 3]]
    with pytest.raises(ValueError, match="distinct"):
        encode_outcomes([1, 1], [1, 1], [0, 0])
    with pytest.raises(ValueError, match="2 images, 1 clean"):
        encode_outcomes([1, 2], [1], [0, 0])


def test_a_cell_stores_and_returns_its_outcomes(tmp_path):
    images = np.arange(20)
    clean = np.arange(20) % 3 != 0
    adv = np.arange(20) % 5 == 0
    with Store(tmp_path / "db.sqlite") as store:
        store.write_cell(_row(0, images, clean, adv))
        # An Outcomes object is stored the same way.
        store.write_cell({**_row(1, images, clean, adv), "outcomes": Outcomes(images, clean, adv)})
        store.write_cell({**_row(2, images, clean, adv), "outcomes": None})
        a, b, c = store.rows()
    assert a["outcomes"] == Outcomes(images, clean, adv) == b["outcomes"]
    assert a["outcomes"] != Outcomes(images, clean, ~adv)
    assert c["outcomes"] is None


def _damaged(tmp_path, change):
    db = tmp_path / "study.sqlite"
    images, clean, adv = np.arange(12), np.arange(12) < 9, np.arange(12) < 4
    with Store(db) as store:
        store.write_cell(_row(0, images, clean, adv))
    value = encode_outcomes(images, clean, adv)
    change(value)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE cells SET outcomes = ?", (json.dumps(value),))
    return db


@pytest.mark.parametrize("change, message", [
    (lambda v: v.update(clean="not*base64"), "outcomes.clean is not base64"),
    (lambda v: v.update(adversarial=base64.b64encode(b"\xff").decode()),
     "outcomes.adversarial holds 1 bytes, not the 12 bits"),
    (lambda v: v.update(clean=base64.b64encode(b"\xff\xff").decode()),  # padding bits set
     "outcomes.clean holds 2 bytes, not the 12 bits"),
    (lambda v: v.update(images=[[0, 6], [6, 11]]), "outcomes hold 11 images, the row 12"),
    (lambda v: v.update(images=[[0, 6], [3, 9]]), "outcomes.images repeats an image"),
    (lambda v: v.update(images=[[0, "12"]]), "outcomes.images is not a list of"),
    (lambda v: v.update(images=[[5, 5]]), "outcomes.images is not a list of"),
    (lambda v: v.pop("adversarial"), "outcomes is not an object of images"),
    # 10 of the 12 images right where the row says 9: the flags disagree with the accuracy.
    (lambda v: v.update(clean=base64.b64encode(np.packbits(np.arange(12) < 10).tobytes())
                        .decode()), "outcomes give clean_accuracy 0.833333, the row 0.75"),
])
def test_damaged_outcomes_are_one_line_errors_naming_the_database_and_row(tmp_path, change,
                                                                          message):
    db = _damaged(tmp_path, change)
    with Store(db, readonly=True) as store:
        with pytest.raises(ValueError, match=f"^{db}: row 0 \\(k0\\): {message}") as error:
            store.rows()
    assert "\n" not in str(error.value)


def _version_2(db):
    """A database as robustcnn wrote it at schema version 2: no outcomes, no provenance."""
    with Store(db) as store:
        store.write_cell({"key": "old", "model": "m", "model_key": "mk", "attack": "fgsm",
                          "eps": 0.1, "seed": 0, "examples": 4, "clean_accuracy": 0.5,
                          "adversarial_accuracy": 0.25})
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE cells DROP COLUMN outcomes")
        conn.execute("ALTER TABLE cells DROP COLUMN provenance")
        conn.execute("UPDATE meta SET value = '2' WHERE name = 'schema_version'")


def test_a_version_2_database_reads_and_upgrades_when_written(tmp_path):
    db = tmp_path / "old.sqlite"
    _version_2(db)
    before = db.read_bytes()
    with Store(db, readonly=True) as store:
        (row,) = store.rows()
    assert row["outcomes"] is None and row["provenance"] is None
    assert row["adversarial_accuracy"] == pytest.approx(0.25)
    assert db.read_bytes() == before  # reading changed nothing

    with Store(db) as store:  # a resumed study: the store gains the new columns
        store.write_cell(_row(1, np.arange(4), [1, 1, 0, 0], [1, 0, 0, 0]))
        old, new = store.rows()
    assert old["outcomes"] is None and new["outcomes"].clean.tolist() == [1, 1, 0, 0]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone() \
            == (str(SCHEMA_VERSION),)
    with Store(db) as store:  # opening it again changes nothing
        assert len(store.rows()) == 2


def test_a_version_3_database_without_its_columns_is_refused(tmp_path):
    db = tmp_path / "odd.sqlite"
    _version_2(db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '3' WHERE name = 'schema_version'")
    with pytest.raises(ValueError, match="schema version 3 without its outcomes, provenance"):
        Store(db, readonly=True)


def test_the_report_of_a_version_2_database_says_what_it_lacks(tmp_path):
    from robustcnn.study.report import write_report

    db = tmp_path / "old.sqlite"
    _version_2(db)
    md = open(write_report(str(db), str(tmp_path / "report"))[1]).read()
    assert "| m | fgsm ε=0.1 | 1 | 25.00 | – (one seed) | – (no per-image data) |" in md
    assert "results schema version 2" in md
    assert "1 of 1 cells record no provenance" in md


def test_sizes_round_trip_and_are_checked(tmp_path):
    sizes = np.array([0.0, 0.125, 1.5, 3e-7], np.float32)
    value = json.loads(json.dumps(encode_outcomes(np.arange(4), [1, 1, 0, 1], [0, 1, 0, 0],
                                                  sizes)))
    o = decode_outcomes(value, "here", examples=4)
    assert o.sizes.dtype == np.float32 and o.sizes.tolist() == sizes.tolist()
    assert decode_outcomes({k: v for k, v in value.items() if k != "sizes"}, "here").sizes \
        is None
    with Store(tmp_path / "s.sqlite") as store:
        store.write_cell(_row(0, np.arange(4), [1, 1, 0, 1], [0, 1, 0, 0], eps=None,
                              outcomes=Outcomes(np.arange(4), np.array([1, 1, 0, 1], bool),
                                                np.array([0, 1, 0, 0], bool), sizes)))
        (row,) = store.rows()
    assert row["outcomes"].sizes.tolist() == sizes.tolist()
    with pytest.raises(ValueError, match="4 sizes for 3 images"):
        encode_outcomes(np.arange(3), [1, 1, 1], [1, 1, 1], sizes)
    with pytest.raises(ValueError, match="not finite and >= 0"):
        encode_outcomes(np.arange(1), [1], [1], [-1.0])
    for bad, words in ((dict(value, sizes=value["sizes"][:-4]), "not the 4 float32 sizes"),
                       (dict(value, sizes="!!"), "outcomes.sizes is not base64"),
                       (dict(value, sizes=base64.b64encode(np.array(
                           [0, np.nan, 0, 0], "<f4").tobytes()).decode()), "not finite"),
                       (dict(value, radii="x"), "not an object of images")):
        with pytest.raises(ValueError, match=words):
            decode_outcomes(bad, "here", examples=4)


def test_a_version_3_database_reads_and_becomes_version_4_when_written(tmp_path):
    db = tmp_path / "v3.sqlite"
    with Store(db) as store:
        store.write_cell(_row(0, np.arange(4), [1, 1, 0, 0], [1, 0, 0, 0]))
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '3' WHERE name = 'schema_version'")
    with Store(db, readonly=True) as store:
        (row,) = store.rows()
    assert row["outcomes"].sizes is None and row["outcomes"].clean.tolist() == [1, 1, 0, 0]
    with Store(db) as store:
        store.write_cell(_row(1, np.arange(2), [1, 1], [0, 1], eps=None,
                              outcomes=encode_outcomes(np.arange(2), [1, 1], [0, 1], [0.5, 2])))
        assert [r["outcomes"].sizes is None for r in store.rows()] == [True, False]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone() \
            == ("4",) == (str(SCHEMA_VERSION),)
