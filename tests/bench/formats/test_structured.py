"""bench/formats/structured.py: every structured FC case computes what its dense peer computes
(on a 48² layer instead of the bench's 4096²), and the suite runs under --formats."""

import pytest

from robustcnn.bench import cli, pairs
from robustcnn.bench.formats import structured

pytest.importorskip("torch")


def test_every_case_agrees_with_its_peer(monkeypatch, tiny):
    monkeypatch.setattr(structured, "FC", 48)
    cases = structured.cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)) == 8
    assert sum("toeplitz-like r=4" in n for n in names) == 4
    for case in cases:
        result = pairs.run_case(case, tiny)
        assert not result.failure, result.failure
        assert result.agrees, f"{case.name}: {result.check}"


def test_the_suite_is_in_the_format_section(monkeypatch):
    monkeypatch.setattr(structured, "FC", 48)
    args = cli.parse_args(["--formats", "--cases", "structured FC"])
    suite = [s for s in cli.SUITES if s.name.startswith("structured FC")]
    assert len(suite) == 1
    plan = suite[0].plan(args)
    assert plan is not None and len(plan[0]) == 8
