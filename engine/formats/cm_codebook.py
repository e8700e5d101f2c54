"""Context-mixing-coded sparse codebook weights: Deep Compression's entry streams (codes and
relative gaps, sparse_codebook.py) coded by an adaptive binary arithmetic coder with logistic
context mixing (cm.py) instead of Huffman.

What is stored: one stream (each entry's gap, then its code, coded under contexts of the
previous code, the gap, the row and the column), the entry count and the centroids; no tables
(the model adapts as it goes); among the options, the context model's version
(``cm.MODEL_VERSION``), since the model's constants define the stream. The model's code
symbols are the codes ranked by their centroid's value (``cm.value_ranks`` of the centroids as
float32, the same whatever dtype they are loaded in). Loading decodes the stream once into the sparse codebook's packed codes and
gaps, which the sparse kernels compute on as they do for ``sparse_codebook`` (as ``rans``
does): decoding is far slower than rANS's (a model update per bit), so it happens once.

Before anything is allocated: the entry count is at most the layer's weights (every entry
advances the position by at least one), so the decode's work and memory are bounded by the
layer's size; the stream holds at least its 4 final bytes; the decode reads only inside it and
accepts only a stream that ends with the encoder's final state at its last byte.
"""

import numpy as np

from . import cm
from .base import check_bits, check_bytes, check_structure_array, check_values, pack_bits
from .dense import HEADER_BYTES
from .sparse_codebook import DecodedAtLoad


def _layout(shape):
    """(row length, period) of a weight: positions run over rows of prod(shape[1:]) columns; a
    convolution's columns repeat every kh·kw (its kernel's spatial size)."""
    ncols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    period = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return max(ncols, 1), max(period, 1)


class CmCodebookWeight(DecodedAtLoad):
    kind = "cm"
    array_names = ("stream", "count", "centroids")

    def __init__(self, shape, stream, count, centroids, code_bits, gap_bits, *, at="cm"):
        code_bits = check_bits(code_bits, "code_bits", at)
        gap_bits = check_bits(gap_bits, "gap_bits", at)
        size = int(np.prod(shape))
        if not 0 <= count <= size:
            raise ValueError(f"{at}: {count} entries for a weight of {size} values (at most one "
                             f"entry per value)")
        if not 1 <= centroids.size <= 1 << code_bits:
            raise ValueError(f"{at}: {centroids.size} centroids do not fit {code_bits}-bit codes")
        codes, gaps = cm.decode(stream, count, code_bits, gap_bits, *_layout(shape),
                                ranks=self.ranks(centroids, code_bits),
                                name=f"{at}: cm stream")
        super().__init__(shape, pack_bits(codes, code_bits), pack_bits(gaps, gap_bits), count,
                         centroids, code_bits, gap_bits, at=at)
        self.stream = stream

    def layout(self):
        """(row length, period) the model's contexts use (see ``cm``)."""
        return _layout(self.shape)

    @staticmethod
    def ranks(centroids, code_bits):
        """The code → model symbol map of these centroids (their float32 values' ranks)."""
        return cm.value_ranks(np.asarray(centroids, dtype=np.float32), code_bits)

    @classmethod
    def from_sparse_codebook(cls, weight, *, at="cm"):
        """Code a SparseCodebookWeight's codes and gaps."""
        codes, gaps, _ = weight.entries()
        stream = cm.encode(codes, gaps, weight.code_bits, weight.gap_bits, *_layout(weight.shape),
                           ranks=cls.ranks(weight.centroids, weight.code_bits))
        return cls(weight.shape, stream, weight.count, weight.centroids.copy(), weight.code_bits,
                   weight.gap_bits, at=at)

    @classmethod
    def from_arrays(cls, shape, arrays, options, *, dtype=np.float32, at="cm"):
        version = options.get("model")
        if version != cm.MODEL_VERSION:
            raise ValueError(f"{at}: a cm stream of context model version {version!r}; this "
                             f"robustcnn decodes version {cm.MODEL_VERSION}")
        count = check_structure_array(np.asarray(arrays["count"]), "count", at)
        if count.shape != (1,) or count[0] < 0:
            raise ValueError(f"{at}: count must hold one non-negative entry count, got {count}")
        stream = check_bytes(arrays["stream"], "stream", at)
        centroids = check_values(arrays["centroids"], "centroids", at, dtype)
        return cls(shape, stream, int(count[0]), centroids,
                   check_bits(options["code_bits"], "code_bits", at),
                   check_bits(options["gap_bits"], "gap_bits", at), at=at)

    def arrays(self):
        return {"stream": self.stream, "count": self._count, "centroids": self.centroids}

    def options(self):
        return {**super().options(), "model": cm.MODEL_VERSION}

    def entry_bits(self):
        """One joint stream of codes and gaps: its bits per entry, split by the two widths (an
        approximation: the coder does not say which bits went to which)."""
        per_entry = 8 * self.stream.nbytes / max(self.count, 1)
        share = self.code_bits / (self.code_bits + self.gap_bits)
        return per_entry * share, per_entry * (1 - share)

    def astype(self, dtype):
        return CmCodebookWeight(self.shape, self.stream, self.count, self.centroids.astype(dtype),
                                self.code_bits, self.gap_bits)

    def stored_nbytes(self):
        """The stream, the centroids, and a header (the dense one, the two bit widths, the entry
        count and the stream's length, 8 bytes each)."""
        return {"stream": self.stream.nbytes, "centroids": self.centroids.size * 4,
                "header": HEADER_BYTES + 2 + 2 * 8}

    def runtime_nbytes(self):
        """What loading builds (not stored): the packed codes and gaps and the row index."""
        return self.codes.nbytes + self.gaps.nbytes + super().runtime_nbytes()
