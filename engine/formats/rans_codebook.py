"""rANS-coded sparse codebook weights: Deep Compression's entry streams (codes and relative
gaps, sparse_codebook.py) entropy-coded by rANS (rans.py) instead of Huffman.

What is stored: the two rANS streams, each with its static frequency table (uint16, Σ = 2^12,
trimmed after the last used symbol), the entry count and the centroids. Loading decodes both
streams once, in one loop (``rans.decode_pair``), into the sparse codebook's packed codes and
gaps, which the sparse kernels compute on as they do for ``sparse_codebook``: this format is a
sparse codebook that stores its entries in fewer bytes. Decoding once at load rather than in
the kernels (as ``huffman`` does) is the measured choice (bench/formats/rans_decode.py): the
load-time decode runs at several GB/s of float32 weights, and the kernels then read fixed-width
codes and gaps, their fastest sparse input.

Before anything is allocated: the entry count is at most the layer's weights (every entry
advances the position by at least one), each frequency table holds at most 2^bits entries,
each stream at least its 4-byte state; the decode reads only inside each stream and accepts
only a stream that ends exactly at the encoder's start state and its last byte.
"""

import numpy as np

from . import rans
from .base import check_bits, check_bytes, check_structure_array, check_values, pack_bits
from .dense import HEADER_BYTES
from .sparse_codebook import DecodedAtLoad


class RansCodebookWeight(DecodedAtLoad):
    kind = "rans"
    array_names = ("code_stream", "code_freqs", "gap_stream", "gap_freqs", "count", "centroids")

    def __init__(self, shape, code_stream, code_freqs, gap_stream, gap_freqs, count, centroids,
                 code_bits, gap_bits, *, at="rans"):
        code_bits = check_bits(code_bits, "code_bits", at)
        gap_bits = check_bits(gap_bits, "gap_bits", at)
        size = int(np.prod(shape))
        if not 0 <= count <= size:
            raise ValueError(f"{at}: {count} entries for a weight of {size} values (at most one "
                             f"entry per value)")
        code_freqs = rans.check_freqs(code_freqs, 1 << code_bits, count, f"{at}: code_freqs")
        gap_freqs = rans.check_freqs(gap_freqs, 1 << gap_bits, count, f"{at}: gap_freqs")
        codes, gaps = rans.decode_pair((code_stream, code_freqs), (gap_stream, gap_freqs), count,
                                       name=f"{at}: rANS code/gap streams")
        super().__init__(shape, pack_bits(codes, code_bits), pack_bits(gaps, gap_bits), count,
                         centroids, code_bits, gap_bits, at=at)
        self.code_stream, self.code_freqs = code_stream, code_freqs
        self.gap_stream, self.gap_freqs = gap_stream, gap_freqs

    @classmethod
    def from_sparse_codebook(cls, weight, *, at="rans"):
        """rANS-code a SparseCodebookWeight's codes and gaps (frequencies of this layer's own)."""
        codes, gaps, _ = weight.entries()
        code_stream, code_freqs = rans.encode(codes, 1 << weight.code_bits)
        gap_stream, gap_freqs = rans.encode(gaps, 1 << weight.gap_bits)
        return cls(weight.shape, code_stream, code_freqs, gap_stream, gap_freqs, weight.count,
                   weight.centroids.copy(), weight.code_bits, weight.gap_bits, at=at)

    @classmethod
    def from_arrays(cls, shape, arrays, options, *, dtype=np.float32, at="rans"):
        count = check_structure_array(np.asarray(arrays["count"]), "count", at)
        if count.shape != (1,) or count[0] < 0:
            raise ValueError(f"{at}: count must hold one non-negative entry count, got {count}")
        streams = []
        for label in ("code", "gap"):
            data = check_bytes(arrays[f"{label}_stream"], f"{label}_stream", at)
            freqs = check_structure_array(np.asarray(arrays[f"{label}_freqs"]),
                                          f"{label}_freqs", at)
            if freqs.size and (freqs.min() < 0 or freqs.max() > rans.M):
                raise ValueError(f"{at}: {label}_freqs must lie in 0..{rans.M}")
            streams += [data, freqs.astype(np.uint16)]
        centroids = check_values(arrays["centroids"], "centroids", at, dtype)
        return cls(shape, *streams, int(count[0]), centroids,
                   check_bits(options["code_bits"], "code_bits", at),
                   check_bits(options["gap_bits"], "gap_bits", at), at=at)

    def arrays(self):
        return {"code_stream": self.code_stream, "code_freqs": self.code_freqs,
                "gap_stream": self.gap_stream, "gap_freqs": self.gap_freqs,
                "count": self._count, "centroids": self.centroids}

    def entry_bits(self):
        """Each stream's bits over the entry count."""
        count = max(self.count, 1)
        return 8 * self.code_stream.nbytes / count, 8 * self.gap_stream.nbytes / count

    def astype(self, dtype):
        return RansCodebookWeight(self.shape, self.code_stream, self.code_freqs, self.gap_stream,
                                  self.gap_freqs, self.count, self.centroids.astype(dtype),
                                  self.code_bits, self.gap_bits)

    def stored_nbytes(self):
        """Both rANS streams, their frequency tables (2 bytes a symbol), the centroids, and a
        header (the dense one, the two bit widths, the entry count and the two streams'
        lengths, 8 bytes each)."""
        return {"code_stream": self.code_stream.nbytes, "gap_stream": self.gap_stream.nbytes,
                "rans_tables": self.code_freqs.nbytes + self.gap_freqs.nbytes,
                "centroids": self.centroids.size * 4, "header": HEADER_BYTES + 2 + 3 * 8}

    def runtime_nbytes(self):
        """What loading builds (not stored): the packed codes and gaps and the row index."""
        return self.codes.nbytes + self.gaps.nbytes + super().runtime_nbytes()
