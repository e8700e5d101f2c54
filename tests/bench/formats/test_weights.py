"""bench/formats/weights.py: the pruned, quantized weight of a format case, in every format."""

import numpy as np

from robustcnn.bench.formats import weight_bytes, weights
from robustcnn.compress.prune import magnitude_mask


def _pruned(w, sparsity):
    """What pruned_weight does to its random weight: compress.prune's mask, zeros elsewhere."""
    return np.where(magnitude_mask(w, sparsity=sparsity), w, 0).astype(w.dtype)


def test_magnitude_prune_and_quantize_survivors():
    w = np.array([[0.5, -0.1, 0.05, -2.0], [1.0, 0.2, -0.3, 0.01]], dtype=np.float32)
    pruned = _pruned(w, 0.5)
    np.testing.assert_array_equal(pruned, np.float32([[0.5, 0, 0, -2.0], [1.0, 0, -0.3, 0]]))
    q = weights.quantize_survivors(pruned, 1)  # one value, (−2 + 1) / 2, for every survivor
    np.testing.assert_array_equal(q, np.where(pruned != 0, np.float32(-0.5), 0))
    assert q.dtype == w.dtype
    q = weights.quantize_survivors(_pruned(np.random.default_rng(0).standard_normal(
        (40, 50), dtype=np.float32), 0.7), 4)
    assert np.count_nonzero(q) == 600 and np.unique(q[q != 0]).size <= 15


def test_pruned_weight_stores_every_format_exactly():
    pw = weights.pruned_weight("t", (8, 3, 3, 3), 0.9, code_bits=8, gap_bits=4)
    assert set(pw.levels) == {4, 5, 8} and pw.size == 216
    assert np.count_nonzero(pw.levels[8]) == round(0.1 * 216)
    for name, (fmt, bits) in pw.formats.items():
        np.testing.assert_array_equal(fmt.to_dense(), pw.levels[bits], err_msg=name)
    assert pw.formats["robustcnn-huffman-cached"][0].kind == "sparse_codebook"
    read = weight_bytes.weight_bytes_read(pw)
    assert read["dense"] == 4 * 216 and read[weights.CODE_BITS] > 216
    assert read["huffman cached"] == pw.formats["robustcnn-sparse-codebook"][0].stored_bytes()


def test_pruned_weight_keeps_the_largest_magnitudes():
    pw = weights.pruned_weight("t", (16, 20), 0.75, code_bits=5, gap_bits=5, seed=3)
    w = np.random.default_rng(3).standard_normal((16, 20), dtype=np.float32)
    kept = pw.levels[5] != 0
    assert kept.sum() == 80 and np.abs(w[kept]).min() > np.abs(w[~kept]).max()
