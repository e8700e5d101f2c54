"""The pruned weights the format cases run: a random weight, magnitude-pruned with
``compress.prune``, its survivors snapped to 2**bits − 1 evenly spaced values, so that with 0.0
it is a 2**bits-value codebook and every codebook conversion is exact (Deep Compression's code
widths: 5 bits for FC, 8 for conv; the 4- and 5-bit dense-pattern codebooks get their own
quantization of the same pruned weight); and that weight in every format we time."""

import time
from dataclasses import dataclass

import numpy as np

from ...compress.prune import magnitude_mask
from .contenders import OURS_DENSE

CODE_BITS = "codebook (code bits)"  # the bytes tables' dense-pattern codebook at the code width


def quantize_survivors(weight, bits):
    """A copy of ``weight`` whose non-zeros are snapped to the nearest of 2**bits − 1 values
    spaced evenly over their range (Deep Compression's linear initialisation): with 0.0, at most
    2**bits distinct values, which every codebook of ``bits`` or more bits stores exactly."""
    from ...engine.formats.codebook import linear_centroids, nearest_codes

    flat = weight.reshape(-1).copy()
    nz = np.flatnonzero(flat)
    if nz.size:
        levels = linear_centroids(flat[nz], (1 << bits) - 1).astype(weight.dtype)
        flat[nz] = levels[nearest_codes(flat[nz], levels)]
    return flat.reshape(weight.shape)


@dataclass
class PrunedWeight:
    """One pruned weight, quantized at several code widths, in every format we time."""

    name: str  # e.g. "fc 4096x4096 90% sparse"
    levels: dict  # bits → dense weight whose non-zeros take at most 2**bits − 1 values
    code_bits: int  # the width of the sparse codebook's codes (Deep Compression: FC 5, conv 8)
    formats: dict  # contender name → (weight format, key of ``levels`` it stores)
    decode_once_s: float  # seconds HuffmanCodebookWeight.decoded() took (the cache's one cost)
    extra_bytes: dict = None  # bytes of formats not timed or not ours: {column: bytes}

    @property
    def size(self):
        return self.levels[self.code_bits].size


def pruned_weight(name, shape, sparsity, code_bits, gap_bits, *, seed=0):
    """A random weight (scaled by 1/√fan-in), magnitude-pruned to ``sparsity``, in every format:
    the sparse codebook and Huffman with ``code_bits``/``gap_bits``, codebooks of 4 and 5 bits."""
    from ...engine.formats import (CodebookWeight, CSRWeight, DenseWeight, HuffmanCodebookWeight,
                                   SparseCodebookWeight)

    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape, dtype=np.float32)
    w *= np.float32(1 / np.sqrt(np.prod(shape[1:])))
    w = np.where(magnitude_mask(w, sparsity=sparsity), w, 0).astype(w.dtype)
    levels = {bits: quantize_survivors(w, bits) for bits in sorted({4, 5, code_bits})}
    main = levels[code_bits]
    sc = SparseCodebookWeight.from_dense(main, code_bits, gap_bits)
    huffman = HuffmanCodebookWeight.from_sparse_codebook(sc)
    t0 = time.perf_counter()
    cached = huffman.decoded()
    decode_once_s = time.perf_counter() - t0
    formats = {
        OURS_DENSE: (DenseWeight.from_dense(main), code_bits),
        "robustcnn-csr": (CSRWeight.from_dense(main), code_bits),
        "robustcnn-sparse-codebook": (sc, code_bits),
        "robustcnn-huffman": (huffman, code_bits),
        "robustcnn-huffman-cached": (cached, code_bits),
        "robustcnn-codebook4": (CodebookWeight.from_dense(levels[4], 4), 4),
        "robustcnn-codebook5": (CodebookWeight.from_dense(levels[5], 5), 5),
    }
    # the dense-pattern codebook at the code width, for the bytes table (timed if 4 or 5 bits)
    timed = formats.get(f"robustcnn-codebook{code_bits}")
    codebook = timed[0] if timed else CodebookWeight.from_dense(main, code_bits)
    return PrunedWeight(name, levels, code_bits, formats, decode_once_s,
                        {CODE_BITS: codebook.stored_bytes()})
