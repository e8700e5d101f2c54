"""bench/formats/rans_decode.py: the rANS-vs-Huffman decode case agrees on small layers and
reports throughput; the size table sums each coder's stored bytes."""

import numpy as np

from robustcnn.bench.formats import contenders, rans_decode
from robustcnn.engine.formats import HuffmanCodebookWeight, RansCodebookWeight, SparseCodebookWeight


def _layers(rng):
    out = []
    for shape in [(20, 30), (8, 3, 3, 3)]:
        w = rng.choice([0.0, 0.5, -0.25, 1.0], size=shape, p=[0.8, 0.1, 0.06, 0.04])
        sc = SparseCodebookWeight.from_dense(w, 3, 3)
        out.append((sc, HuffmanCodebookWeight.from_sparse_codebook(sc),
                    RansCodebookWeight.from_sparse_codebook(sc)))
    return out


def test_the_decode_case_agrees_and_the_sizes_add_up(tiny):
    layers = _layers(np.random.default_rng(0))
    case = rans_decode.rans_decode_case("tiny", layers, target=1)
    assert case.weights_decoded == 600 + 216
    result = contenders.run_format_case(case, tiny)
    assert all(result.agrees(c.name) for c in case.contenders), result.failures
    assert result.megabytes_per_s("robustcnn-rans") > 0
    sizes = rans_decode.stream_sizes(layers)
    assert sizes["rans"] == sum(r.stored_bytes() for _, _, r in layers)
    assert sizes["huffman_streams"] == sum(h.codes.bits.nbytes + h.gaps.bits.nbytes
                                           for _, h, _ in layers)
    assert rans_decode.rans_decode_cases(match="no such case") == []
