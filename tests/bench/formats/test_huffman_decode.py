"""bench/formats/huffman_decode.py: the NumPy decoder, and a decode case against ours."""

import numpy as np

from robustcnn.bench.formats import contenders, huffman_decode
from robustcnn.engine.formats import huffman


def _stream(symbols, starts, alphabet):
    return huffman.encode(np.asarray(symbols), np.asarray(starts), alphabet)


def test_numpy_huffman_decode_matches_the_symbols():
    rng = np.random.default_rng(1)
    symbols = huffman_decode.skewed_symbols(3000, decay=0.9)
    starts = np.sort(np.concatenate([[0, 0, 3000, 3000], rng.integers(0, 3000, 20)]))  # empty ones
    np.testing.assert_array_equal(huffman_decode.numpy_huffman_decode(
        _stream(symbols, starts, 256)), symbols)
    # Fibonacci counts give codes far longer than the 10-bit primary table
    counts = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597]
    symbols = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    stream = _stream(symbols, [0, 1000, symbols.size], len(counts))
    assert stream.lengths.max() > 10
    np.testing.assert_array_equal(huffman_decode.numpy_huffman_decode(stream), symbols)


def test_a_huffman_decode_case_agrees_and_reports_throughput(tiny):
    symbols = huffman_decode.skewed_symbols(5000)
    case = huffman_decode.huffman_decode_case("tiny", [_stream(symbols, [0, 2500, 5000], 256)],
                                              [symbols], 5000, target=1)
    result = contenders.run_format_case(case, tiny)
    assert all(result.agrees(c.name) for c in case.contenders), result.failures
    assert result.megabytes_per_s("robustcnn-huffman") > 0
    assert "tiny" in contenders.decode_table([result])
    assert contenders.format_targets([result])[0][0] == "tiny: robustcnn-huffman >= 1 MB/s"
