"""Huffman-coded sparse codebook weights: Deep Compression's last stage, decoded as kernels run.

The entry stream of a sparse codebook (codes and relative gaps, see sparse_codebook.py) is
Huffman-coded, codes and gaps each with their own canonical code (huffman.py). Both streams are
cut into one block per weight-matrix row and the bit where each block starts is stored, with the
position before each row (``row_prev``), so a kernel decodes any row by itself:

    row o: codes and gaps of entries row_entry[o] .. row_entry[o + 1], decoded from
    code_bit_starts[o] and gap_bit_starts[o]; positions continue from row_prev[o]

Kernels decode a row into the caller's entry buffers every time they visit it (the streaming
path). ``decoded()`` is the optional decode-once cache: the same weight as a SparseCodebookWeight,
which the layer can use instead, measured and reported apart. Loading decodes every block once
to verify the streams, so kernels never meet a corrupt one.
"""

from collections import namedtuple

import numpy as np
from numba import njit

from .._jit import JIT
from . import huffman
from .base import WeightFormat, check_structure_array, check_values, register_row_decoder
from .dense import HEADER_BYTES
from .sparse_codebook import SparseCodebookWeight

HuffmanArrays = namedtuple("HuffmanArrays", (
    "code_bits code_nbits code_primary code_primary_bits code_canonical code_symbols "
    "code_starts gap_bits gap_nbits gap_primary gap_primary_bits gap_canonical gap_symbols "
    "gap_starts centroids row_entry row_prev ncols"))


@njit(**JIT)
def huffman_row_entries(W, o, cols, vals, slots, need_slots):
    # Row o: Huffman-decode its gaps into ``cols`` and its codes into ``vals`` (codes < 256 are
    # exact in any float), then turn them in place into (column, value, code), fillers dropped.
    a = W.row_entry[o]
    n = W.row_entry[o + 1] - a
    if n == 0:
        return cols[:0], vals[:0], slots[:0], 0
    end = huffman.decode_block_into(W.gap_bits, W.gap_nbits, W.gap_primary, W.gap_primary_bits,
                                    W.gap_canonical, W.gap_symbols, W.gap_starts[o], n, cols)
    end2 = huffman.decode_block_into(W.code_bits, W.code_nbits, W.code_primary,
                                     W.code_primary_bits, W.code_canonical, W.code_symbols,
                                     W.code_starts[o], n, vals)
    if end < 0 or end2 < 0:  # impossible after the load-time check; decode nothing
        return cols[:0], vals[:0], slots[:0], 0
    p = W.row_prev[o]
    base = o * W.ncols
    k = 0
    for e in range(n):
        p += cols[e] + 1
        c = np.int64(vals[e])
        if c != 0:
            cols[k] = p - base
            vals[k] = W.centroids[c]
            if need_slots:
                slots[k] = c
            k += 1
    return cols[:k], vals[:k], slots[:k if need_slots else 0], k


register_row_decoder(HuffmanArrays, huffman_row_entries)


class HuffmanCodebookWeight(WeightFormat):
    kind = "huffman"
    sparse = True
    array_names = ("code_stream", "code_lengths", "gap_stream", "gap_lengths", "row_entry",
                   "code_bit_starts", "gap_bit_starts", "row_prev", "nbits", "centroids")
    creation_options = ("code_bits", "gap_bits")
    trainable = ("centroids",)
    decay = ()

    def __init__(self, shape, codes, gaps, row_entry, row_prev, centroids, code_bits, gap_bits,
                 *, at="huffman"):
        """``codes`` and ``gaps``: HuffmanStreams whose blocks are the rows (``row_entry``)."""
        super().__init__(shape, centroids.dtype)
        self.codes, self.gaps = codes, gaps
        self.row_entry, self.row_prev = row_entry, row_prev
        self.centroids, self.code_bits, self.gap_bits = centroids, int(code_bits), int(gap_bits)
        self._validate(at)
        self._code_tables = huffman.decode_tables(codes.lengths)
        self._gap_tables = huffman.decode_tables(gaps.lengths)
        self._nbits = np.array([codes.nbits, gaps.nbits], dtype=np.int64)

    def _validate(self, at):
        O = self.rows
        if self.row_entry.shape != (O + 1,) or self.row_prev.shape != (O,):
            raise ValueError(f"{at}: row tables must have rows + 1 = {O + 1} and rows = {O} "
                             f"entries, got {self.row_entry.shape} and {self.row_prev.shape}")
        for label, stream in (("code", self.codes), ("gap", self.gaps)):
            if not np.array_equal(stream.block_symbol_starts, self.row_entry):
                raise ValueError(f"{at}: the {label} stream's blocks are not the rows")
            huffman.validate(stream, name=f"{at}: {label} stream")
        if self.codes.alphabet_size > 1 << self.code_bits or self.gaps.alphabet_size > 1 << self.gap_bits:
            raise ValueError(f"{at}: the streams' alphabets exceed {self.code_bits}-bit codes or "
                             f"{self.gap_bits}-bit gaps")
        # Decode every block once: the kernels then only ever meet streams that decode.
        codes = huffman.decode(self.codes, name=f"{at}: code stream")
        gaps = huffman.decode(self.gaps, name=f"{at}: gap stream")
        reference = SparseCodebookWeight.from_entries(self.shape, codes, gaps, self.centroids,
                                                      self.code_bits, self.gap_bits,
                                                      dtype=self.dtype, at=at)
        if not (np.array_equal(reference.row_entry, self.row_entry)
                and np.array_equal(reference.row_prev, self.row_prev)):
            raise ValueError(f"{at}: the row tables disagree with the decoded positions")

    @classmethod
    def from_sparse_codebook(cls, weight, *, at="huffman"):
        """Huffman-code a SparseCodebookWeight's codes and gaps, one block per row."""
        codes, gaps, _ = weight.entries()
        code_stream = huffman.encode(codes, weight.row_entry, 1 << weight.code_bits,
                                     name=f"{at}: codes")
        gap_stream = huffman.encode(gaps, weight.row_entry, 1 << weight.gap_bits,
                                    name=f"{at}: gaps")
        return cls(weight.shape, code_stream, gap_stream, weight.row_entry.copy(),
                   weight.row_prev.copy(), weight.centroids.copy(), weight.code_bits,
                   weight.gap_bits, at=at)

    @classmethod
    def from_dense(cls, weight, code_bits=8, gap_bits=4, *, centroids=None, dtype=None,
                   at="huffman"):
        return cls.from_sparse_codebook(SparseCodebookWeight.from_dense(
            weight, code_bits, gap_bits, centroids=centroids, dtype=dtype, at=at), at=at)

    @classmethod
    def from_arrays(cls, shape, arrays, options, *, dtype=np.float32, at="huffman"):
        get = {k: check_structure_array(np.asarray(arrays[k]), k, at)
               for k in cls.array_names if k != "centroids"}
        centroids = check_values(arrays["centroids"], "centroids", at, dtype)
        if get["nbits"].shape != (2,):
            raise ValueError(f"{at}: nbits must hold the two streams' bit counts")
        row_entry = get["row_entry"].astype(np.int64)
        streams = []
        for label in ("code", "gap"):
            nbits = int(get["nbits"][0 if label == "code" else 1])
            lengths = get[f"{label}_lengths"]
            streams.append(huffman.HuffmanStream(
                get[f"{label}_stream"].astype(np.uint8, copy=False), nbits,
                lengths.astype(np.uint8, copy=False), row_entry,
                get[f"{label}_bit_starts"].astype(np.int64), lengths.size))
        return cls(shape, streams[0], streams[1], row_entry, get["row_prev"].astype(np.int64),
                   centroids, options["code_bits"], options["gap_bits"], at=at)

    def arrays(self):
        return {"code_stream": self.codes.bits, "code_lengths": self.codes.lengths,
                "gap_stream": self.gaps.bits, "gap_lengths": self.gaps.lengths,
                "row_entry": self.row_entry, "code_bit_starts": self.codes.block_bit_starts,
                "gap_bit_starts": self.gaps.block_bit_starts, "row_prev": self.row_prev,
                "nbits": self._nbits, "centroids": self.centroids}

    def options(self):
        return {"code_bits": self.code_bits, "gap_bits": self.gap_bits}

    def operand(self):
        c, g = self._code_tables, self._gap_tables
        return HuffmanArrays(
            self.codes.bits, self.codes.nbits, c.primary, c.primary_bits, c.canonical,
            c.sorted_symbols, self.codes.block_bit_starts, self.gaps.bits, self.gaps.nbits,
            g.primary, g.primary_bits, g.canonical, g.sorted_symbols, self.gaps.block_bit_starts,
            self.centroids, self.row_entry, self.row_prev, self.cols)

    def decoded(self):
        """The decode-once cache: the same weight as a SparseCodebookWeight (shares centroids)."""
        codes = huffman.decode(self.codes)
        gaps = huffman.decode(self.gaps)
        out = SparseCodebookWeight.from_entries(self.shape, codes, gaps, self.centroids,
                                                self.code_bits, self.gap_bits, dtype=self.dtype)
        out.centroids = self.centroids  # one set of trainable values
        return out

    def max_row_entries(self):
        return int(np.diff(self.row_entry).max(initial=0))

    def to_dense(self):
        return self.decoded().to_dense()

    def nnz(self):
        return self.decoded().nnz()

    def slot_grads(self, dvalues):
        dvalues = dvalues.astype(self.dtype, copy=True)
        dvalues[0] = 0
        return {"centroids": dvalues}

    def reduce_dense_grad(self, dweight):
        return self.decoded().reduce_dense_grad(dweight)

    def stored_nbytes(self):
        """Both Huffman streams with their code-length and block tables (the row table of
        entry starts is shared, counted once), the positions before each row, the centroids."""
        c, g = self.codes.nbytes(), self.gaps.nbytes()
        row_prev_width = huffman.table_dtype(max(self.size, 1)).itemsize
        return {"code_stream": c["bits"], "gap_stream": g["bits"],
                "huffman_tables": c["lengths"] + g["lengths"],
                "row_tables": (c["block_symbol_starts"] + c["block_bit_starts"]
                               + g["block_bit_starts"] + self.rows * row_prev_width),
                "centroids": self.centroids.size * 4,
                "header": HEADER_BYTES + 2 + c["header"] + g["header"]}
