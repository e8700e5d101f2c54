"""Smoke tests of bench.py's helpers: timing, checking, FLOP counts, the report, JSON records."""

import json
import time

import numpy as np
import pytest
from helpers import single_thread

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


# ---------------------------------------------------------------------------------------------
# The weight-format section


def test_time_turns_gives_each_function_its_own_median():
    calls = []
    fns = [lambda: calls.append("a"), lambda: time.sleep(0.002), lambda: calls.append("c")]
    seconds, faults = bench.time_turns(fns, bench.Budget(reps=2, seconds=0.0, warmup=1, turn=0.0))
    assert len(seconds) == 3 and len(faults) == 3
    assert seconds[1] >= 0.002 > max(seconds[0], seconds[2])
    assert calls == ["a", "c"] + ["a", "a", "c", "c"] * 2


def test_magnitude_prune_and_quantize_survivors():
    w = np.array([[0.5, -0.1, 0.05, -2.0], [1.0, 0.2, -0.3, 0.01]], dtype=np.float32)
    pruned = bench.magnitude_prune(w, 0.5)
    np.testing.assert_array_equal(pruned, np.float32([[0.5, 0, 0, -2.0], [1.0, 0, -0.3, 0]]))
    q = bench.quantize_survivors(pruned, 1)  # one value, (−2 + 1) / 2, for every survivor
    np.testing.assert_array_equal(q, np.where(pruned != 0, np.float32(-0.5), 0))
    assert q.dtype == w.dtype
    q = bench.quantize_survivors(bench.magnitude_prune(np.random.default_rng(0).standard_normal(
        (40, 50), dtype=np.float32), 0.3), 4)
    assert np.count_nonzero(q) == 600 and np.unique(q[q != 0]).size <= 15


def test_pruned_weight_stores_every_format_exactly():
    pw = bench.pruned_weight("t", (8, 3, 3, 3), 0.9, code_bits=8, gap_bits=4)
    assert set(pw.levels) == {4, 5, 8} and pw.size == 216
    assert np.count_nonzero(pw.levels[8]) == round(0.1 * 216)
    for name, (fmt, bits) in pw.formats.items():
        np.testing.assert_array_equal(fmt.to_dense(), pw.levels[bits], err_msg=name)
    assert pw.formats["robustcnn-huffman-cached"][0].kind == "sparse_codebook"
    read = bench.weight_bytes_read(pw)
    assert read["dense"] == 4 * 216 and read[bench.CODE_BITS] > 216
    assert read["huffman cached"] == pw.formats["robustcnn-sparse-codebook"][0].stored_bytes()


def _stream(symbols, starts, alphabet):
    from robustcnn.engine.formats import huffman

    return huffman.encode(np.asarray(symbols), np.asarray(starts), alphabet)


def test_numpy_huffman_decode_matches_the_symbols():
    rng = np.random.default_rng(1)
    symbols = bench.skewed_symbols(3000, decay=0.9)
    starts = np.sort(np.concatenate([[0, 0, 3000, 3000], rng.integers(0, 3000, 20)]))  # empty ones
    np.testing.assert_array_equal(bench.numpy_huffman_decode(_stream(symbols, starts, 256)),
                                  symbols)
    # Fibonacci counts give codes far longer than the 10-bit primary table
    counts = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597]
    symbols = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    stream = _stream(symbols, [0, 1000, symbols.size], len(counts))
    assert stream.lengths.max() > 10
    np.testing.assert_array_equal(bench.numpy_huffman_decode(stream), symbols)


def test_a_huffman_decode_case_agrees_and_reports_throughput():
    symbols = bench.skewed_symbols(5000)
    case = bench.huffman_decode_case("tiny", [_stream(symbols, [0, 2500, 5000], 256)], [symbols],
                                     5000, target=1)
    result = bench.run_format_case(case, TINY)
    assert all(result.agrees(c.name) for c in case.contenders), result.failures
    assert result.megabytes_per_s("robustcnn-huffman") > 0
    assert "tiny" in bench.decode_table([result])
    assert bench.format_targets([result])[0][0] == "tiny: robustcnn-huffman >= 1 MB/s"


def test_tiny_sparse_linear_cases_agree_with_torch_and_scipy():
    pytest.importorskip("torch")
    cases = bench.sparse_linear_cases(32, 16, batches=(1, 3), sparsity=0.9)
    assert [c.name for c in cases] == ["fc 32->16 b1 90% sparse fwd", "fc 32->16 b3 90% sparse fwd"]
    for case in cases:
        result = bench.run_format_case(case, TINY)
        names = [c.name for c in case.contenders]
        assert {"robustcnn-csr", "robustcnn-huffman-cached", bench.TORCH_SPARSE,
                bench.SCIPY} <= set(names)
        assert all(result.agrees(n) for n in names), [result.check(n) for n in names]
        assert set(result.seconds) == set(names)
    assert bench.sparse_linear_cases(32, 16, match="no such case") == []


def test_tiny_sparse_conv_cases_agree_with_torch():
    pytest.importorskip("torch")
    fwd, train = bench.sparse_conv_cases("tiny b2", 2, 4, 7, 6, 3, padding=1, groups=2,
                                         sparsity=0.5)
    assert fwd.name == "tiny b2 50% sparse fwd" and train.name == "tiny b2 50% sparse fwd+bwd"
    for case in (fwd, train):
        result = bench.run_format_case(case, TINY)
        assert all(result.agrees(c.name) for c in case.contenders), \
            [result.check(c.name) for c in case.contenders]
    assert [c.name for c in train.contenders] == [bench.OURS_DENSE, "robustcnn-csr",
                                                  bench.TORCH_DENSE]
    text = bench.format_results_table([result])
    assert len(text.splitlines()) == 2 + len(train.contenders)


def _format_result(seconds, targets=(), baselines=(bench.TORCH_DENSE, bench.OURS_DENSE)):
    contenders = [bench.Contender(n, None, None) for n in seconds]
    case = bench.FormatCase("c", contenders, baselines, targets=targets)
    return bench.FormatResult(case, seconds=dict(seconds), errors={n: 0.0 for n in seconds},
                              faults={n: 0.0 for n in seconds})


def test_format_targets_and_records():
    r = _format_result({bench.OURS_DENSE: 2.0, "robustcnn-csr": 1.0, bench.TORCH_DENSE: 4.0},
                       targets=(("robustcnn-csr", bench.TORCH_DENSE, 3.0),
                                ("robustcnn-csr", bench.OURS_DENSE, 1.5)))
    assert [line[2] for line in bench.format_targets([r])] == ["PASS", "PASS"]
    r.errors["robustcnn-csr"] = 1.0
    assert bench.format_targets([r])[0][1:] == ("output wrong or failed", "FALL SHORT")
    r.failures["robustcnn-huffman"] = "ValueError: broken"
    r.case.contenders.append(bench.Contender("robustcnn-huffman", None, None))
    lines = bench.format_results_table([r]).splitlines()
    assert len(lines) == 6 and lines[-1].split()[-3:] == ["FAILED", "ValueError:", "broken"]
    assert len(lines[-1].split()) == 1 + 7 + 3  # implementation, 7 dashes, the check
    recs = json.loads(json.dumps(bench.format_records([r])))
    assert all(set(x) == {"case", "ours", "peer", "ours_s", "peer_s", "ratio"} for x in recs)
    pairs = {(x["ours"], x["peer"]): x["ratio"] for x in recs}
    assert pairs == pytest.approx({("robustcnn-dense", "torch-dense"): 2.0,
                                   ("robustcnn-csr", "torch-dense"): 4.0,
                                   ("robustcnn-csr", "robustcnn-dense"): 2.0})


def test_lenet5_bytes_follow_deep_compression_densities():
    rows = bench.lenet5_bytes()
    assert [r.name for r in rows] == list(bench.LENET5_DC_KEPT)
    for r in rows:
        assert r.nonzeros == round(bench.LENET5_DC_KEPT[r.name] * r.size)
        assert r.bytes["dense"] == 4 * r.size and r.bytes["huffman cached"] == \
            r.bytes["sparse codebook"]
    total = bench.total_row(rows)
    assert total.size == 430_500 and total.bytes["huffman"] < total.bytes["sparse codebook"]
    table = bench.net_bytes_table(rows)
    assert len(table.splitlines()) == 2 + len(rows) + 1 and "total" in table


def test_squeezenet_bytes_add_up_to_the_file():
    rows, file_bytes, biases = bench.squeezenet_bytes()
    assert len(rows) == 26 and file_bytes == 675_763
    # the file: 26 uint32 counts + per layer 256 centroids, biases, codes, gaps; ours: the same
    # streams and centroids + a 14-byte header per layer
    stored = bench.total_row(rows).bytes["sparse codebook"]
    assert stored + biases == file_bytes - 4 * 26 + 14 * 26


def test_bytes_tables_and_json():
    entries = [("w", {"dense": 4096, "csr": 1024, bench.TORCH_SPARSE: 2048})]
    lines = bench.bytes_read_table(entries).splitlines()
    assert len(lines) == 4 and "4.0x" in lines[3] and "-" in lines[2]
    rows = [bench.LayerBytes("a", (2, 3), 3, 4, {"dense": 24, "csr": 20})]
    doc = json.loads(json.dumps(bench.bytes_records(entries, rows, rows)))
    assert doc["bytes_read_per_inference"][1] == {"weight": "w", "format": "csr", "bytes": 1024}
    assert doc["lenet5_deep_compression_densities"][-1]["layer"] == "total"


def test_the_formats_flags_parse():
    args = bench.parse_args(["--formats", "--bytes-json", "b.json", "--cases", "fc"])
    assert args.formats and args.bytes_json == "b.json" and args.cases == "fc"
    assert [c.name for c in bench.format_cases(match="no such case")] == []


# ---------------------------------------------------------------------------------------------
# The PGD section


def test_a_tiny_pgd_case_agrees_with_torch():
    torch = pytest.importorskip("torch")
    case = bench.pgd_case(batch=4, steps=3)
    assert case.name == "lenet5 PGD-3 Linf eps 0.1 b4" and case.target == 1.0
    # Both sides on one thread: many tiny passes, where waking a thread pool costs more than
    # the work when other processes hold the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with single_thread():
            result = bench.run_case(case, TINY)
    finally:
        torch.set_num_threads(threads)
    assert result.agrees, result.check
    assert result.check.startswith("ok step 1: same signs as torch on ")
    assert result.ours_s > 0 and result.peer_s > 0
    assert case.flops == 3 * 2 * sum(bench.lenet5_flops(bench.lenet5(), 4))


def test_torch_pgd_stays_in_the_ball_and_the_range():
    torch = pytest.importorskip("torch")
    net = bench.lenet5(seed=1)
    x = np.random.default_rng(1).random((3,) + net.input_shape, dtype=np.float32)
    xt = torch.from_numpy(x)
    adv = bench.torch_pgd(bench.torch_lenet5(net), xt, torch.tensor([0, 1, 2]), eps=0.1,
                          alpha=0.07, steps=3).numpy()
    delta = np.abs(adv - x)
    assert delta.max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert delta.max() >= 0.1 - 1e-6  # two steps of 0.07 the same way reach the border
    # One step is FGSM: x + alpha · sign(∇ loss), clipped.
    model, labels = bench.torch_lenet5(net), torch.tensor([0, 1, 2])
    xg = xt.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(xg), labels, reduction="sum").backward()
    one = bench.torch_pgd(model, xt, labels, eps=0.1, alpha=0.07, steps=1).numpy()
    np.testing.assert_allclose(one, np.clip(x + 0.07 * np.sign(xg.grad.numpy()), 0, 1), atol=1e-6)


def test_a_pgd_mismatch_is_reported():
    result = bench.Result(_result("p", 1.0, 1.0).case, agreement=(False, "step 1: 3 sign flips"))
    assert not result.agrees and result.check == "MISMATCH step 1: 3 sign flips"
    result.agreement = (True, "fine")
    assert result.agrees and result.check == "ok fine"
