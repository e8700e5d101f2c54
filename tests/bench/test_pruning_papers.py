"""The pruning papers' reproduction (bench/pruning_papers.py): sections replace themselves in the
results file, unknown experiments are refused."""

import pytest

from robustcnn.bench.pruning_papers import EXPERIMENTS, main, write_section


def test_sections_are_replaced_in_place_and_appended(tmp_path):
    path = tmp_path / "papers.md"
    write_section(path, "obd", "OBD", "cmd a", "first")
    write_section(path, "dns", "DNS", "cmd b", "second")
    write_section(path, "obd", "OBD", "cmd c", "third")
    text = path.read_text()
    assert text.startswith("# Pruning methods against their papers")
    assert "first" not in text and "cmd a" not in text
    assert text.index("third") < text.index("second")  # obd kept its place
    assert text.count("<!-- obd -->") == 1 and text.count("<!-- /dns -->") == 1


def test_unknown_experiments_are_refused():
    assert set(EXPERIMENTS) == {"obd", "dns", "robust"}
    with pytest.raises(SystemExit, match="unknown experiment 'hydra'"):
        main(["--model", "nowhere.h5", "--only", "obd,hydra"])
