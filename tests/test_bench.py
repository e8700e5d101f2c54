"""Smoke tests of bench.py's helpers: timing, checking, FLOP counts, the report, JSON records."""

import json
import time

import numpy as np
import pytest

from robustcnn import bench

TINY = bench.Budget(reps=2, seconds=0.0, warmup=1, turn=0.0)


def _result(name, ours_s, peer_s, target=None, error=0.0):
    case = bench.Case(name, ours=None, peer=None, flops=1e6, images=4, target=target)
    return bench.Result(case, ours_s=ours_s, peer_s=peer_s, error=error)


def test_relative_error_is_scaled_by_the_peer():
    a = np.array([1.0, 2.0, 4.0])
    assert bench.relative_error((a,), (a,)) == 0.0
    assert bench.relative_error((a + 0.04,), (a,)) == pytest.approx(0.01)
    assert bench.relative_error((a, a), (a, 2 * a)) == pytest.approx(0.5)
    assert bench.relative_error((a[:2],), (a,)) == float("inf")


def test_time_pair_takes_turns_and_honours_the_budget():
    calls = []
    ours_s, peer_s, *faults = bench.time_pair(lambda: calls.append("o"), lambda: calls.append("p"),
                                              bench.Budget(reps=3, seconds=0.0, warmup=1, turn=0.0))
    # one warm-up pair, then 3 turns each: one untimed call and one timed call
    assert calls == ["o", "p"] + ["o", "o", "p", "p"] * 3
    assert ours_s >= 0 and peer_s >= 0 and min(faults) >= 0
    calls.clear()
    bench.time_pair(lambda: calls.append("o"), lambda: time.sleep(0.002),
                    bench.Budget(reps=1, seconds=0.01, warmup=0, turn=0.005))
    assert len(calls) >= 5  # a turn repeats a fast call; turns go on until the budget is spent


def test_a_mismatch_against_torch_float32_defers_to_the_float64_reference():
    r = _result("c", 1.0, 1.0, error=0.02)
    assert not r.agrees and r.check.startswith("MISMATCH")
    r.reference_error = 1e-7
    assert r.agrees and r.check.startswith("ok")
    r.reference_error = 0.02
    assert not r.agrees


def test_records_have_the_documented_keys_and_ratio():
    results = [_result("a", 0.5, 1.0), _result("b", 2.0, 1.0)]
    cold = {"empty": (10.0, 9.0), "warm": (2.0, 1.0), "torch": (3.0, 0.1)}
    recs = json.loads(json.dumps(bench.records(results, cold)))
    assert all(set(r) == {"case", "ours", "peer", "ours_s", "peer_s", "ratio"} for r in recs)
    assert [r["ratio"] for r in recs] == pytest.approx([2.0, 0.5, 0.3, 1.5])
    assert recs[0]["ours"] == bench.OURS and recs[0]["peer"] == bench.PEER
    assert len(bench.records(results, None)) == 2


def test_targets_pass_or_fall_short():
    results = [_result("fast", 1.0, 1.0, target=0.5), _result("slow", 4.0, 1.0, target=0.5),
               _result("wrong", 1.0, 1.0, target=0.5, error=1.0), _result("untargeted", 9.0, 1.0)]
    cold = {"empty": (10.0, 9.0), "warm": (3.5, 1.0), "torch": (3.0, 0.1)}
    verdicts = [line[2] for line in bench.targets(results, cold)]
    assert verdicts == ["PASS", "FALL SHORT", "FALL SHORT", "FALL SHORT"]
    assert bench.targets([], None)[0][2] == "-"


def test_table_has_a_row_per_result():
    text = bench.results_table([_result("a", 0.001, 0.002), _result("b", 0.5, 1.0)], peak=100.0)
    lines = text.splitlines()
    assert len(lines) == 4 and "2.00x" in lines[2] and "4,000" in lines[2]


def test_flops_per_cycle_reads_the_flags():
    assert bench.flops_per_cycle({"avx512f"})[0] == 32
    assert bench.flops_per_cycle({"avx2", "fma"})[0] == 32
    assert bench.flops_per_cycle({"avx"})[0] == 16
    assert bench.flops_per_cycle(set())[0] == 8


def test_lenet5_flops_count_two_per_multiply_add():
    from robustcnn.models.lenet import lenet5

    conv1 = 20 * 24 * 24 * 25
    conv2 = 50 * 8 * 8 * 20 * 25
    expected = [2 * 3 * m for m in (conv1, conv2, 800 * 500, 500 * 10)]
    assert bench.lenet5_flops(lenet5(), 3) == expected


@pytest.mark.parametrize("backward", [False, True])
def test_a_tiny_conv_case_agrees_with_torch(backward):
    pytest.importorskip("torch")
    case = bench.conv_case("tiny", 2, 4, 7, 6, 3, padding=1, groups=2, backward=backward)
    result = bench.run_case(case, TINY)
    assert result.agrees, result.check
    assert result.ours_s > 0 and result.peer_s > 0
    assert case.flops == 2 * 2 * 6 * 7 * 7 * 2 * 9 * (3 if backward else 1)


def test_a_tiny_linear_case_agrees_with_torch():
    pytest.importorskip("torch")
    result = bench.run_case(bench.linear_case("tiny", 3, 16, 8, backward=True), TINY)
    assert result.agrees, result.check
