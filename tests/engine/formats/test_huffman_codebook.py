"""The Huffman-coded sparse codebook format: storage, the decode-once cache, bad streams.

Its kernels are checked against the dense kernels with the other formats in test_formats.py.
"""

import numpy as np
import pytest

from robustcnn.engine.formats import HuffmanCodebookWeight, SparseCodebookWeight
from robustcnn.engine.formats import huffman

LAYER = "conv2 (Convolution)"


def pruned_quantized(rng, shape=(20, 8, 3, 3), keep=0.2, levels=15):
    w = rng.choice(rng.uniform(0.1, 1, levels) * rng.choice([-1, 1], levels), size=shape)
    w[rng.random(shape) > keep] = 0
    return w


def test_encodes_the_sparse_codebook_losslessly(rng):
    w = pruned_quantized(rng)
    sc = SparseCodebookWeight.from_dense(w, 4, 3)
    hf = HuffmanCodebookWeight.from_sparse_codebook(sc)
    assert np.array_equal(hf.to_dense(), w)  # storage round trip: exact
    cached = hf.decoded()
    for a, b in zip(cached.entries(), sc.entries()):
        np.testing.assert_array_equal(a, b)
    assert cached.centroids is hf.centroids  # one set of trainable values


def test_the_row_index_is_derived_not_stored(rng):
    hf = HuffmanCodebookWeight.from_dense(pruned_quantized(rng, (30, 6, 3, 3)), 4, 3)
    assert not {"row_entry", "row_prev", "code_bit_starts"} & set(hf.arrays())
    assert hf.runtime_nbytes() == (31 + 30 + 31 + 31) * 8
    # Each row decodes from its derived bit start to the next row's.
    dec = hf.decoded()
    codes, gaps, _ = dec.entries()
    for o in range(hf.rows):
        a, b = hf.row_entry[o], hf.row_entry[o + 1]
        out = np.empty(b - a, dtype=np.int64)
        t = huffman.decode_tables(hf.codes.lengths)
        end = huffman.decode_block_into(hf.codes.bits, hf.codes.nbits, t.primary, t.primary_bits,
                                        t.canonical, t.sorted_symbols,
                                        hf.codes.block_bit_starts[o], b - a, out)
        assert end == hf.codes.block_bit_starts[o + 1]
        np.testing.assert_array_equal(out, codes[a:b])


def test_stored_size_is_the_streams_plus_their_tables(rng):
    w = pruned_quantized(rng, (64, 32, 3, 3), keep=0.1)
    sc = SparseCodebookWeight.from_dense(w, 8, 4)
    hf = HuffmanCodebookWeight.from_sparse_codebook(sc)
    codes, gaps, _ = sc.entries()
    parts = hf.stored_nbytes()
    assert parts["code_stream"] == (hf.codes.nbits + 7) // 8
    assert parts["gap_stream"] == (hf.gaps.nbits + 7) // 8
    assert hf.stored_bytes() == sum(parts.values())
    # Each stream within 1 bit/symbol of its entropy (Huffman's bound).
    for stream, symbols in ((hf.codes, codes), (hf.gaps, gaps)):
        entropy = huffman.entropy_bits(np.bincount(symbols))
        assert entropy <= stream.nbits <= entropy + symbols.size
    # Skewed codes and gaps: the streams are smaller than the fixed-width ones they encode.
    assert parts["code_stream"] + parts["gap_stream"] < sc.codes.nbytes + sc.gaps.nbytes


def test_round_trip_through_arrays_and_options(rng):
    hf = HuffmanCodebookWeight.from_dense(pruned_quantized(rng), 4, 3)
    again = HuffmanCodebookWeight.from_arrays(hf.shape, hf.arrays(), hf.options(),
                                              dtype=np.float64, at=LAYER)
    assert np.array_equal(again.to_dense(), hf.to_dense())


@pytest.mark.parametrize("tamper", ["truncate", "lengths", "nbits", "count", "count_short",
                                    "past_the_weight"])
def test_corrupt_streams_are_refused_naming_the_layer(tamper, rng):
    hf = HuffmanCodebookWeight.from_dense(pruned_quantized(rng), 4, 3)
    arrays = {k: np.array(v) for k, v in hf.arrays().items()}
    if tamper == "truncate":
        arrays["code_stream"] = arrays["code_stream"][:-3]
    elif tamper == "lengths":
        arrays["gap_lengths"][:] = 1  # over-subscribed: not a prefix code
    elif tamper == "nbits":
        arrays["nbits"][1] += 40
    elif tamper == "count":
        arrays["count"][0] += 5
    elif tamper == "count_short":
        arrays["count"][0] -= 1
    elif tamper == "past_the_weight":
        # Re-encode the gaps with every gap at its largest: the positions run past the weight.
        codes, gaps, _ = hf.decoded().entries()
        stream = huffman.encode(np.full_like(gaps, 7), None, 8)
        arrays["gap_stream"], arrays["gap_lengths"] = stream.bits, stream.lengths
        arrays["nbits"][1] = stream.nbits
    with pytest.raises(ValueError) as e:
        HuffmanCodebookWeight.from_arrays(hf.shape, arrays, hf.options(), dtype=np.float64, at=LAYER)
    assert str(e.value).startswith(LAYER), str(e.value)


def test_layer_converts_to_huffman_and_back(rng):
    from robustcnn.models.lenet import lenet5

    net = lenet5(dtype=np.float64)
    w = net["conv2"].dense_weight()
    w[np.abs(w) < np.quantile(np.abs(w), 0.8)] = 0
    net["conv2"].set_weight_format(SparseCodebookWeight.from_dense(w, 8, 4))
    x = rng.random((3, 1, 28, 28))
    before = net.forward(x)
    net.convert("conv2", "huffman", code_bits=8, gap_bits=4)
    assert net["conv2"].weight_format.kind == "huffman"
    np.testing.assert_allclose(net.forward(x), before, rtol=1e-12, atol=1e-12)
    copy = net.copy()
    np.testing.assert_allclose(copy.forward(x), before, rtol=1e-12, atol=1e-12)
    assert sorted(k for k in net.state_dict() if k.startswith("conv2/")) == sorted(
        f"conv2/{k}" for k in HuffmanCodebookWeight.array_names + ("bias",))
