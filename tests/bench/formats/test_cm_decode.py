"""bench/formats/cm_decode.py: the cm-vs-rANS-vs-Huffman decode case agrees on small layers and
reports throughput; the size table sums each coder's stored bytes."""

import numpy as np

from robustcnn.bench.formats import cm_decode, contenders
from robustcnn.engine.formats import SparseCodebookWeight


def _layers(rng):
    out = []
    for shape in [(20, 30), (8, 3, 3, 3)]:
        w = rng.choice([0.0, 0.5, -0.25, 1.0], size=shape, p=[0.8, 0.1, 0.06, 0.04])
        out.append(cm_decode.coded_forms(SparseCodebookWeight.from_dense(w, 3, 3)))
    return out


def test_the_decode_case_agrees_and_the_sizes_add_up(tiny):
    layers = _layers(np.random.default_rng(0))
    case = cm_decode.cm_decode_case("tiny", layers, target=1)
    assert case.weights_decoded == 600 + 216
    result = contenders.run_format_case(case, tiny)
    assert all(result.agrees(c.name) for c in case.contenders), result.failures
    assert result.megabytes_per_s("robustcnn-cm") > 0
    sizes = cm_decode.stream_sizes(layers)
    assert sizes["cm"] == sum(c.stored_bytes() for *_, c in layers)
    assert sizes["cm_streams"] == sum(c.stream.nbytes for *_, c in layers)
    assert sizes["huffman_streams"] == sum(h.codes.bits.nbytes + h.gaps.bits.nbytes
                                           for _, h, _, _ in layers)
    assert cm_decode.cm_decode_cases(match="no such case") == []
