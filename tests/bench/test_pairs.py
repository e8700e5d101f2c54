"""bench/pairs.py: the check, targets, table and records of the pair cases (with the cold
start's, which the --json records and the targets list follow)."""

import json

import pytest

from robustcnn.bench import coldstart, pairs


def _result(name, ours_s, peer_s, target=None, error=0.0, peer_name=pairs.PEER):
    case = pairs.Case(name, ours=None, peer=None, flops=1e6, images=4, target=target,
                      peer_name=peer_name)
    return pairs.Result(case, ours_s=ours_s, peer_s=peer_s, error=error)


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
    recs = json.loads(json.dumps(pairs.records(results) + coldstart.records(cold)))
    assert all(set(r) == {"case", "ours", "peer", "ours_s", "peer_s", "ratio"} for r in recs)
    assert [r["ratio"] for r in recs] == pytest.approx([2.0, 0.5, 0.3, 1.5])
    assert recs[0]["ours"] == pairs.OURS and recs[0]["peer"] == pairs.PEER
    assert len(pairs.records(results) + coldstart.records(None)) == 2


def test_targets_pass_or_fall_short():
    results = [_result("fast", 1.0, 1.0, target=0.5), _result("slow", 4.0, 1.0, target=0.5),
               _result("wrong", 1.0, 1.0, target=0.5, error=1.0), _result("untargeted", 9.0, 1.0)]
    cold = {"empty": (10.0, 9.0), "warm": (3.5, 1.0), "torch": (3.0, 0.1)}
    verdicts = [line[2] for line in pairs.targets(results) + coldstart.targets(cold)]
    assert verdicts == ["PASS", "FALL SHORT", "FALL SHORT", "FALL SHORT"]
    assert (pairs.targets([]) + coldstart.targets(None))[0][2] == "-"
    assert pairs.targets(results)[0][0] == "fast: torch/ours >= 0.5"


def test_table_has_a_row_per_result():
    text = pairs.results_table([_result("a", 0.001, 0.002), _result("b", 0.5, 1.0)], peak=100.0)
    lines = text.splitlines()
    assert len(lines) == 4 and "2.00x" in lines[2] and "4,000" in lines[2]
    assert lines[0].split()[:4] == ["case", "ours", "ms", "torch"]


def test_a_table_with_several_peers_names_each_rows_peer():
    results = [_result("a", 0.001, 0.002), _result("b", 0.5, 1.0, peer_name="onnxruntime")]
    lines = pairs.results_table(results, peak=100.0).splitlines()
    assert lines[0].split()[:5] == ["case", "peer", "ours", "ms", "peer"]
    assert lines[2].split()[:2] == ["a", "torch"] and lines[3].split()[:2] == ["b", "onnxruntime"]


def test_a_pgd_mismatch_is_reported():
    result = pairs.Result(_result("p", 1.0, 1.0).case, agreement=(False, "step 1: 3 sign flips"))
    assert not result.agrees and result.check == "MISMATCH step 1: 3 sign flips"
    result.agreement = (True, "fine")
    assert result.agrees and result.check == "ok fine"


def test_contention_targets_compare_our_slowdown_with_the_peers():
    calm, hurt = _result("calm", 1.0, 1.0), _result("hurt", 1.0, 1.0)
    calm.busy, hurt.busy = (1.5, 2.0), (3.0, 2.0)  # ours 1.5x vs 2x slower; 3x vs 2x
    assert calm.slowdowns == pytest.approx((1.5, 2.0))
    lines = pairs.targets([calm, hurt, _result("quiet only", 1.0, 1.0)])
    assert [(line[1], line[2]) for line in lines] == [("1.50x vs 2.00x", "PASS"),
                                                      ("3.00x vs 2.00x", "FALL SHORT")]
    assert lines[0][0] == "calm: our slowdown under contention <= torch's"
    recs = pairs.records([calm, _result("quiet only", 1.0, 1.0)])
    assert (recs[0]["busy_ours_s"], recs[0]["busy_peer_s"]) == (1.5, 2.0)
    assert "busy_ours_s" not in recs[1]


def test_a_case_under_contention_is_timed_again_beside_spinning_processes(tiny, monkeypatch):
    import numpy as np

    seen, spin = [], pairs.contention
    monkeypatch.setattr(pairs, "contention", lambda n: seen.append(n) or spin(n))
    case = pairs.Case("sum", ours=lambda: (np.ones(3),), peer=lambda: (np.ones(3),), flops=3)
    quiet = pairs.run_case(case, tiny)
    busy = pairs.run_case(case, tiny, contend=1)
    assert quiet.busy is None and seen == [1]
    assert not busy.failure and all(t > 0 for t in busy.busy)


def test_the_onnxruntime_case_agrees_with_our_lenet5(tiny):
    from robustcnn.bench import runtime

    pytest.importorskip("onnxruntime")
    result = pairs.run_case(runtime.lenet5_case(batch=4), tiny)
    assert result.agrees, result.check
    assert result.case.peer_name == "onnxruntime" and result.case.target == 1.0


def test_the_contention_table_shows_each_sides_slowdown(capsys):
    r = _result("c", 1e-3, 2e-3)
    r.busy = (2e-3, 6e-3)
    pairs.contention_table([r, _result("quiet", 1.0, 1.0)], processes=2)
    out = capsys.readouterr().out
    assert "beside 2 CPU-bound" in out
    row = out.splitlines()[-1].split()
    assert row[0] == "c" and row[-3:] == ["2.00x", "3.00x", "3.00x"]
