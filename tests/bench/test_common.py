"""bench/common.py: timing by turns and the output check."""

import time

import numpy as np
import pytest

from robustcnn.bench import common


def test_relative_error_is_scaled_by_the_peer():
    a = np.array([1.0, 2.0, 4.0])
    assert common.relative_error((a,), (a,)) == 0.0
    assert common.relative_error((a + 0.04,), (a,)) == pytest.approx(0.01)
    assert common.relative_error((a, a), (a, 2 * a)) == pytest.approx(0.5)
    assert common.relative_error((a[:2],), (a,)) == float("inf")


def test_time_pair_takes_turns_and_honours_the_budget():
    calls = []
    ours_s, peer_s, *faults = common.time_pair(
        lambda: calls.append("o"), lambda: calls.append("p"),
        common.Budget(reps=3, seconds=0.0, warmup=1, turn=0.0))
    # one warm-up pair, then 3 turns each: one untimed call and one timed call
    assert calls == ["o", "p"] + ["o", "o", "p", "p"] * 3
    assert ours_s >= 0 and peer_s >= 0 and min(faults) >= 0
    calls.clear()
    common.time_pair(lambda: calls.append("o"), lambda: time.sleep(0.002),
                     common.Budget(reps=1, seconds=0.01, warmup=0, turn=0.005))
    assert len(calls) >= 5  # a turn repeats a fast call; turns go on until the budget is spent


def test_time_turns_gives_each_function_its_own_median():
    calls = []
    fns = [lambda: calls.append("a"), lambda: time.sleep(0.002), lambda: calls.append("c")]
    seconds, faults = common.time_turns(fns, common.Budget(reps=2, seconds=0.0, warmup=1,
                                                           turn=0.0))
    assert len(seconds) == 3 and len(faults) == 3
    assert seconds[1] >= 0.002 > max(seconds[0], seconds[2])
    assert calls == ["a", "c"] + ["a", "a", "c", "c"] * 2


def test_selected_matches_a_substring_or_everything():
    assert common.selected("fc 4096 b1", None) and common.selected("fc 4096 b1", "b1")
    assert not common.selected("fc 4096 b1", "b64")


def test_contention_spins_processes_that_end_with_the_block():
    with common.contention(2) as spinners:
        assert len(spinners) == 2 and all(p.poll() is None for p in spinners)
    assert all(p.returncode is not None for p in spinners)
    with common.contention(0) as spinners:
        assert spinners == []
