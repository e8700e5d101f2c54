"""defences/reproduce.py: bad options are refused before any work; the report holds the command
and one table per part with the paper's figures (slow: it trains and attacks small nets)."""

import os

import pytest

from robustcnn.defences import reproduce


def test_bad_options_are_refused_at_the_start(capsys):
    for argv in (["--parts", "distillation,bogus"], ["--train", "0"], ["--samples", "-1"]):
        with pytest.raises(SystemExit):
            reproduce.main(argv)
        assert "bogus" in capsys.readouterr().err or argv[0] != "--parts"


def test_markdown_report_has_the_command_and_every_row():
    section = {"title": "T", "setup": "s", "seconds": 1.0, "header": ("a", "b"),
               "rows": [("x", "1%"), ("y", "2%")], "verdict": "missed: why"}
    text = reproduce.markdown([section], "python -m robustcnn.defences.reproduce", "budget")
    assert "python -m robustcnn.defences.reproduce" in text
    assert "| x | 1% |" in text and "| y | 2% |" in text and "**Verdict:** missed: why" in text


@pytest.mark.slow
def test_every_part_runs_on_a_tiny_budget(tmp_path, capsys):
    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        pytest.skip("Fashion-MNIST is not installed")
    out = tmp_path / "report.md"
    assert reproduce.main(["--workdir", str(tmp_path / "nets"), "--train", "600", "--fit", "300",
                           "--test", "60", "--slow-examples", "6", "--epochs", "1",
                           "--samples", "200", "--smoothing-examples", "6", "--cw-iter", "5",
                           "--out", str(out)]) == 0
    text = out.read_text()
    for title in ("Defensive distillation", "Feature squeezing", "Verified accuracy",
                  "Randomized smoothing"):
        assert f"## {title}" in text
    for paper in ("< 0.5%", "98.2%", "92.54%", "61%"):
        assert paper in text
    assert text.count("**Verdict:**") == 4
    printed = capsys.readouterr().out
    assert "verdict:" in printed
