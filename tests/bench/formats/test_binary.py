"""bench/formats/binary.py: every binary-format case computes what its peer computes (on shapes
shrunk from the bench's FC 4096² and AlexNet conv2), and the suite is listed."""

import pytest

from robustcnn.bench import cli, pairs
from robustcnn.bench.formats import binary, quantized

pytest.importorskip("torch")


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setattr(quantized, "FC", 70)  # a partial last word of sign bits
    monkeypatch.setattr(quantized, "BATCHES", (1, 64))
    monkeypatch.setattr(quantized, "CONV2", dict(input_shape=(6, 7, 7), weight_shape=(8, 3, 5, 5),
                                                 stride=1, padding=2, dilation=1, groups=2))


def test_every_case_agrees_with_its_peer(small, tiny):
    cases = binary.cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)) == 12
    assert sum("vs torch" in n for n in names) == 4
    for case in cases:
        result = pairs.run_case(case, tiny)
        assert not result.failure, result.failure
        assert result.agrees, f"{case.name}: {result.check}"


def test_the_suite_is_listed():
    assert len([s for s in cli.SUITES if s.name.startswith("binary format")]) == 1
