"""bench/formats/quantized.py: every quantized-format case computes what its peer computes (on
shapes shrunk from the bench's FC 4096² and AlexNet conv2), and the suite runs under
--formats."""

import pytest

from robustcnn.bench import cli, pairs
from robustcnn.bench.formats import quantized

pytest.importorskip("torch")


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setattr(quantized, "FC", 48)
    monkeypatch.setattr(quantized, "BATCHES", (1, 64))
    monkeypatch.setattr(quantized, "CONV2", dict(input_shape=(6, 7, 7), weight_shape=(8, 3, 5, 5),
                                                 stride=1, padding=2, dilation=1, groups=2))


def test_every_case_agrees_with_its_peer(small, tiny):
    cases = quantized.cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)) == 15
    assert sum("vs torch dynamic" in n for n in names) == 2
    for case in cases:
        result = pairs.run_case(case, tiny)
        assert not result.failure, result.failure
        assert result.agrees, f"{case.name}: {result.check}"
    assert [c.target for c in cases if c.target] == [1.5, 1.0, 1.5]


def test_the_suite_runs_with_the_formats_flag():
    args = cli.parse_args(["--formats", "--cases", "int8 FC"])
    suite = [s for s in cli.SUITES if s.name.startswith("quantized formats")]
    assert len(suite) == 1
    assert pairs.suite("x", (lambda: [],)).plan(args) is None
    assert pairs.suite("x", (lambda: [],), formats=True).plan(args)[0] == []
