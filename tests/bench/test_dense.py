"""bench/dense.py: FLOP counts, and tiny conv and FC cases that must agree with torch."""

import pytest

from robustcnn.bench import dense, pairs
from robustcnn.models.lenet import lenet5


def test_lenet5_flops_count_two_per_multiply_add():
    conv1 = 20 * 24 * 24 * 25
    conv2 = 50 * 8 * 8 * 20 * 25
    expected = [2 * 3 * m for m in (conv1, conv2, 800 * 500, 500 * 10)]
    assert dense.lenet5_flops(lenet5(), 3) == expected


@pytest.mark.parametrize("backward", [False, True])
def test_a_tiny_conv_case_agrees_with_torch(backward, tiny):
    pytest.importorskip("torch")
    case = dense.conv_case("tiny", 2, 4, 7, 6, 3, padding=1, groups=2, backward=backward)
    result = pairs.run_case(case, tiny)
    assert result.agrees, result.check
    assert result.ours_s > 0 and result.peer_s > 0
    assert case.flops == 2 * 2 * 6 * 7 * 7 * 2 * 9 * (3 if backward else 1)


def test_a_tiny_linear_case_agrees_with_torch(tiny):
    pytest.importorskip("torch")
    result = pairs.run_case(dense.linear_case("tiny", 3, 16, 8, backward=True), tiny)
    assert result.agrees, result.check
