"""bench/formats/contenders.py: the targets, table and records of several-implementation
cases."""

import json

import pytest

from robustcnn.bench.formats import contenders as c


def _format_result(seconds, targets=(), baselines=(c.TORCH_DENSE, c.OURS_DENSE)):
    contenders = [c.Contender(n, None, None) for n in seconds]
    case = c.FormatCase("c", contenders, baselines, targets=targets)
    return c.FormatResult(case, seconds=dict(seconds), errors={n: 0.0 for n in seconds},
                          faults={n: 0.0 for n in seconds})


def test_format_targets_and_records():
    r = _format_result({c.OURS_DENSE: 2.0, "robustcnn-csr": 1.0, c.TORCH_DENSE: 4.0},
                       targets=(("robustcnn-csr", c.TORCH_DENSE, 3.0),
                                ("robustcnn-csr", c.OURS_DENSE, 1.5)))
    assert [line[2] for line in c.format_targets([r])] == ["PASS", "PASS"]
    r.errors["robustcnn-csr"] = 1.0
    assert c.format_targets([r])[0][1:] == ("output wrong or failed", "FALL SHORT")
    r.failures["robustcnn-huffman"] = "ValueError: broken"
    r.case.contenders.append(c.Contender("robustcnn-huffman", None, None))
    lines = c.format_results_table([r]).splitlines()
    assert len(lines) == 6 and lines[-1].split()[-3:] == ["FAILED", "ValueError:", "broken"]
    assert len(lines[-1].split()) == 1 + 7 + 3  # implementation, 7 dashes, the check
    recs = json.loads(json.dumps(c.format_records([r])))
    assert all(set(x) == {"case", "ours", "peer", "ours_s", "peer_s", "ratio"} for x in recs)
    pairs = {(x["ours"], x["peer"]): x["ratio"] for x in recs}
    assert pairs == pytest.approx({("robustcnn-dense", "torch-dense"): 2.0,
                                   ("robustcnn-csr", "torch-dense"): 4.0,
                                   ("robustcnn-csr", "robustcnn-dense"): 2.0})
