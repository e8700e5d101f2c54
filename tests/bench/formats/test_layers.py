"""bench/formats/layers.py: tiny FC and conv cases, every format and peer agreeing with torch
float64."""

import pytest

from robustcnn.bench.formats import contenders, layers


def test_tiny_sparse_linear_cases_agree_with_torch_and_scipy(tiny):
    pytest.importorskip("torch")
    cases = layers.sparse_linear_cases(32, 16, batches=(1, 3), sparsity=0.9)
    assert [c.name for c in cases] == ["fc 32->16 b1 90% sparse fwd", "fc 32->16 b3 90% sparse fwd"]
    for case in cases:
        result = contenders.run_format_case(case, tiny)
        names = [c.name for c in case.contenders]
        assert {"robustcnn-csr", "robustcnn-huffman-cached", contenders.TORCH_SPARSE,
                contenders.SCIPY} <= set(names)
        assert all(result.agrees(n) for n in names), [result.check(n) for n in names]
        assert set(result.seconds) == set(names)
        # each sparse format's other FC kernel (the one direct_walk does not pick) beside it
        others = sorted(n.rsplit(" (", 1)[0] for n in names if n.endswith(("(rows)", "(direct)")))
        assert others == ["robustcnn-csr", "robustcnn-huffman", "robustcnn-huffman-cached",
                          "robustcnn-sparse-codebook"], names
    assert layers.sparse_linear_cases(32, 16, match="no such case") == []


def test_the_matrix_vector_peer_runs_at_batch_1_only():
    pytest.importorskip("torch")
    b1, b3 = layers.sparse_linear_cases(32, 16, batches=(1, 3), sparsity=0.9)
    peers = [p.name for p in layers.LINEAR_PEERS]
    assert [c.name for c in b1.contenders][-len(peers):] == peers
    assert contenders.TORCH_SPARSE_MV not in [c.name for c in b3.contenders]
    assert b1.baselines == (contenders.TORCH_DENSE, contenders.TORCH_SPARSE, contenders.SCIPY,
                            contenders.OURS_DENSE, contenders.TORCH_SPARSE_MV)
    assert b1.weight.extra_bytes[contenders.TORCH_SPARSE] > b1.weight.extra_bytes[
        contenders.SCIPY]  # int64 indices against int32


def test_tiny_sparse_conv_cases_agree_with_torch(tiny):
    pytest.importorskip("torch")
    fwd, train = layers.sparse_conv_cases("tiny b2", 2, 4, 7, 6, 3, padding=1, groups=2,
                                          sparsity=0.5)
    assert fwd.name == "tiny b2 50% sparse fwd" and train.name == "tiny b2 50% sparse fwd+bwd"
    for case in (fwd, train):
        result = contenders.run_format_case(case, tiny)
        assert all(result.agrees(c.name) for c in case.contenders), \
            [result.check(c.name) for c in case.contenders]
    assert [c.name for c in train.contenders] == [contenders.OURS_DENSE, "robustcnn-csr",
                                                  contenders.TORCH_DENSE]
    text = contenders.format_results_table([result])
    assert len(text.splitlines()) == 2 + len(train.contenders)
