"""Sparse codebook weights: Deep Compression's and EIE's layout of a pruned, quantized layer.

The matrix (O rows over K flattened columns, C order) is a stream of entries, one per stored
weight in position order. Each entry has a code (into the centroids) and a gap, the number of
positions skipped since the previous entry, in a fixed width (Deep Compression: 4 bits for conv,
5 for FC):

    position[e] = position[e − 1] + gap[e] + 1,   position[−1] = −1
    W.flat[position[e]] = centroids[code[e]]

A gap too wide for its bits is bridged by filler entries with code 0, whose centroid is 0.0;
code 0 means "zero" and is never trained. Codes and gaps are packed LSB first.

At load, one pass over the gaps finds where each row starts in the stream (``row_entry``) and the
position just before it (``row_prev``), so kernels can decode rows in parallel, and the packed
codes and gaps are turned into one unsigned integer per entry (``entries``: the code in the top
byte, the entry's column in the row below it; uint32 for rows of up to 2^24 columns, else
uint64), the layout the kernels walk: a code and a column come from one 4-byte load, no bit
fields, no chain of gaps from entry to entry. On FC 4096² at 90 % pruned with 5-bit codes and
gaps, one thread, batch 1, the rows' walk alone (CPU ms, best of 5): 0.93 with these entries,
1.17-1.29 with a uint16 (code, gap) pair per entry (read one or four at a time, 4 or 8 sums),
1.52 with a uint16 column and a uint8 code in two arrays, 3.0 on the packed bit streams;
CSR's 1.26. All of it is derived, not stored: ``runtime_nbytes`` reports it apart from the
stored size (4 bytes an entry against CSR's 8 and the stored ~1.3).
"""

from collections import namedtuple

import numpy as np
from numba import njit

from .._jit import JIT, JIT_INLINE
from .base import (WeightFormat, check_bits, check_bytes, check_structure_array, check_values,
                   pack_bits, packed_nbytes, register_row_decoder, register_row_direct,
                   unpack_bits)
from .codebook import linear_centroids, nearest_codes
from .dense import HEADER_BYTES

SparseCodebookArrays = namedtuple("SparseCodebookArrays", "entries centroids row_entry")


@njit(**JIT_INLINE)
def entry_shift(entries):
    # Bit where an entry's code starts (its top byte): 24 for uint32 entries, 56 for uint64;
    # the column is the bits below it. A constant per compiled dtype.
    return np.int64(entries.itemsize * 8 - 8)


@njit(**JIT)
def sparse_codebook_row_entries(W, o, cols, vals, slots, need_slots):
    # Row o: its entries' columns and centroids; fillers (code 0) are skipped.
    entries, centroids = W.entries, W.centroids
    shift = entry_shift(entries)
    mask = (np.int64(1) << shift) - 1
    n = 0
    for e in range(W.row_entry[o], W.row_entry[o + 1]):
        a = np.int64(entries[e])
        c = a >> shift
        if c != 0:
            cols[n] = a & mask
            vals[n] = centroids[c]
            if need_slots:
                slots[n] = c
            n += 1
    return cols[:n], vals[:n], slots[:n if need_slots else 0], n


register_row_decoder(SparseCodebookArrays, sparse_codebook_row_entries)


@njit(**JIT_INLINE)
def _walk(entries, centroids, e, end, x):
    # x: (K,) → Σ_{e ≤ i < end} centroids[code_i] · x[column_i], four independent sums
    # EIE's walk on the execution layout: one 4-byte load gives an entry's code and column, so
    # an entry costs three loads (entry, centroid, x) and no arithmetic chain. Fillers add
    # centroid 0 = 0.0 · x: cheaper than a branch per entry (an inf or NaN in x then reaches
    # the sum, as in a dense product).
    shift = entry_shift(entries)
    mask = (np.int64(1) << shift) - 1
    s0 = s1 = s2 = s3 = centroids[0]  # 0.0 in the values' dtype
    while e + 4 <= end:
        i = np.uint64(e)  # unsigned: no negative-index wraparound
        a0 = np.int64(entries[i])
        a1 = np.int64(entries[i + np.uint64(1)])
        a2 = np.int64(entries[i + np.uint64(2)])
        a3 = np.int64(entries[i + np.uint64(3)])
        s0 += centroids[a0 >> shift] * x[a0 & mask]
        s1 += centroids[a1 >> shift] * x[a1 & mask]
        s2 += centroids[a2 >> shift] * x[a2 & mask]
        s3 += centroids[a3 >> shift] * x[a3 & mask]
        e += 4
    while e < end:  # the rest
        a = np.int64(entries[e])
        s0 += centroids[a >> shift] * x[a & mask]
        e += 1
    return (s0 + s1) + (s2 + s3)


@njit(**JIT)
def sparse_codebook_row_dot(W, o, x):
    # x: (K,) → Σ_e centroids[code[e]] · x[column[e]] over row o's entries
    return _walk(W.entries, W.centroids, W.row_entry[o], W.row_entry[o + 1], x)


@njit(**JIT)
def sparse_codebook_rows_dot(W, lo, hi, x, bias, y):
    # x: (K,); bias, y: (O,) → y[o] = bias[o] + sparse_codebook_row_dot(W, o, x), lo ≤ o < hi
    entries, centroids, row_entry = W.entries, W.centroids, W.row_entry
    for o in range(lo, hi):
        y[o] = bias[o] + _walk(entries, centroids, row_entry[o], row_entry[o + 1], x)


@njit(**JIT)
def sparse_codebook_row_dot_backward(W, o, g, x, need_input, need_weight, dx, dcentroids):
    # x, dx: (K,); dcentroids: (centroids,), accumulated into
    # dx[k] += g · centroids[code[e]];   dcentroids[code[e]] += g · x[k]   (k = column[e]; code 0,
    # the zero, gets sums too: slot_grads drops them)
    entries, centroids = W.entries, W.centroids
    shift = entry_shift(entries)
    mask = (np.int64(1) << shift) - 1
    for e in range(W.row_entry[o], W.row_entry[o + 1]):
        a = np.int64(entries[e])
        k = a & mask
        c = a >> shift
        if need_input:
            dx[k] += g * centroids[c]
        if need_weight:
            dcentroids[c] += g * x[k]


register_row_direct(SparseCodebookArrays, sparse_codebook_row_dot, sparse_codebook_row_dot_backward,
                    sparse_codebook_rows_dot)


def entries_from_positions(positions, codes, gap_bits):
    """(codes, gaps) of the entry stream for sorted ``positions``, with fillers where needed."""
    positions = np.asarray(positions, dtype=np.int64)
    gaps = np.diff(positions, prepend=-1) - 1
    span = 1 << gap_bits  # a filler covers gap_max + 1 positions
    fillers = gaps // span
    last_gap = gaps - fillers * span
    count = fillers + 1
    out_codes = np.zeros(int(count.sum()), dtype=np.int64)
    out_gaps = np.full(out_codes.size, span - 1, dtype=np.int64)
    ends = np.cumsum(count) - 1  # each real entry comes after its fillers
    out_codes[ends] = codes
    out_gaps[ends] = last_gap
    return out_codes, out_gaps


def execution_entries(codes, positions, cols):
    """The kernels' entries: code << shift | column for each entry (fillers included), uint32
    with shift 24 where every column fits below 2^24, else uint64 with shift 56."""
    dtype, shift = (np.uint32, 24) if cols <= 1 << 24 else (np.uint64, 56)
    columns = positions % max(cols, 1)
    return (codes.astype(dtype) << dtype(shift)) | columns.astype(dtype)


def row_index(gaps, rows, cols):
    """(row_entry (rows + 1,), row_prev (rows,)) from the gap stream: where each row begins."""
    positions = np.cumsum(gaps.astype(np.int64) + 1) - 1
    row_of = positions // max(cols, 1)
    row_entry = np.searchsorted(row_of, np.arange(rows + 1), side="left").astype(np.int64)
    before = row_entry[:-1] - 1
    row_prev = np.where(before >= 0, positions[np.maximum(before, 0)] if positions.size
                        else -1, -1).astype(np.int64)
    return row_entry, row_prev, positions


class SparseCodebookWeight(WeightFormat):
    kind = "sparse_codebook"
    sparse = True
    array_names = ("codes", "gaps", "count", "centroids")
    creation_options = ("code_bits", "gap_bits")  # the options from_dense takes
    trainable = ("centroids",)
    decay = ()

    def __init__(self, shape, codes, gaps, count, centroids, code_bits, gap_bits, *,
                 at="sparse_codebook"):
        super().__init__(shape, centroids.dtype)
        self.codes, self.gaps, self.count = codes, gaps, int(count)
        self._count = np.array([self.count], dtype=np.int64)  # stored, like the streams
        self.centroids, self.code_bits, self.gap_bits = centroids, int(code_bits), int(gap_bits)
        self._validate(at)

    def _validate(self, at):
        for label, bits in (("code", self.code_bits), ("gap", self.gap_bits)):
            if not 1 <= bits <= 8:
                raise ValueError(f"{at}: {label} bits must be 1..8, got {bits}")
        if not 1 <= self.centroids.size <= 1 << self.code_bits:
            raise ValueError(f"{at}: {self.centroids.size} centroids do not fit "
                             f"{self.code_bits}-bit codes")
        if self.centroids[0] != 0:
            raise ValueError(f"{at}: centroid 0 is {float(self.centroids[0])}; code 0 marks zeros "
                             f"and fillers, so it must be 0.0")
        for label, packed, bits in (("codes", self.codes, self.code_bits),
                                    ("gaps", self.gaps, self.gap_bits)):
            need = packed_nbytes(self.count, bits)
            if packed.dtype != np.uint8 or packed.shape != (need,):
                raise ValueError(f"{at}: {label} must be {need} uint8 bytes for {self.count} "
                                 f"entries of {bits} bits, got {packed.dtype} {packed.shape}")
        codes = unpack_bits(self.codes, self.count, self.code_bits)
        if self.count and codes.max() >= self.centroids.size:
            raise ValueError(f"{at}: a code is >= the codebook size {self.centroids.size}")
        gaps = unpack_bits(self.gaps, self.count, self.gap_bits)
        self.row_entry, self.row_prev, positions = row_index(gaps, self.rows, self.cols)
        if self.count and positions[-1] >= self.size:
            raise ValueError(f"{at}: the entries run to position {positions[-1]}, past the "
                             f"{self.size} weights of shape {self.shape}")
        self.entries_layout = execution_entries(codes, positions, self.cols)

    @classmethod
    def from_dense(cls, weight, code_bits=8, gap_bits=4, *, centroids=None, dtype=None,
                   at="sparse_codebook"):
        """Entries for the non-zeros of ``weight``. Without ``centroids`` the codebook is 0.0
        plus the distinct non-zero values if they fit, else ``linear_centroids`` (lossy)."""
        code_bits = check_bits(code_bits, "code_bits", at)
        gap_bits = check_bits(gap_bits, "gap_bits", at)
        weight = np.asarray(weight)
        flat = weight.reshape(-1)
        positions = np.flatnonzero(flat)
        values = flat[positions]
        k = 1 << code_bits
        codes = None
        if centroids is None:
            distinct, exact = np.unique(values, return_inverse=True)
            if distinct.size <= k - 1:  # the values themselves: exact, no rounding
                centroids, codes = np.concatenate([[0.0], distinct]), 1 + exact.reshape(-1)
            else:
                centroids = np.concatenate([[0.0], linear_centroids(values, k - 1)])
        centroids = np.asarray(centroids, dtype=dtype or weight.dtype)
        if centroids[0] != 0:
            raise ValueError(f"{at}: centroid 0 must be 0.0 (it marks zeros and fillers)")
        if codes is None:
            codes = 1 + nearest_codes(values, centroids[1:]) if centroids.size > 1 else \
                np.zeros(values.size, dtype=np.int64)
        stream_codes, stream_gaps = entries_from_positions(positions, codes, gap_bits)
        return cls(weight.shape, pack_bits(stream_codes, code_bits), pack_bits(stream_gaps, gap_bits),
                   stream_codes.size, centroids, code_bits, gap_bits, at=at)

    @classmethod
    def from_arrays(cls, shape, arrays, options, *, dtype=np.float32, at="sparse_codebook"):
        codes = check_bytes(arrays["codes"], "codes", at)
        gaps = check_bytes(arrays["gaps"], "gaps", at)
        count = check_structure_array(np.asarray(arrays["count"]), "count", at)
        if count.shape != (1,) or count[0] < 0:
            raise ValueError(f"{at}: count must hold one non-negative entry count, got {count}")
        centroids = check_values(arrays["centroids"], "centroids", at, dtype)
        return cls(shape, codes, gaps, int(count[0]), centroids,
                   check_bits(options["code_bits"], "code_bits", at),
                   check_bits(options["gap_bits"], "gap_bits", at), at=at)

    @classmethod
    def from_entries(cls, shape, codes, gaps, centroids, code_bits, gap_bits, *, dtype=np.float32,
                     at="sparse_codebook"):
        """From unpacked per-entry codes and gaps (e.g. a Deep Compression file)."""
        codes, gaps = np.asarray(codes), np.asarray(gaps)
        code_bits = check_bits(code_bits, "code_bits", at)
        gap_bits = check_bits(gap_bits, "gap_bits", at)
        if codes.shape != gaps.shape:
            raise ValueError(f"{at}: {codes.size} codes but {gaps.size} gaps")
        return cls(shape, pack_bits(codes, code_bits), pack_bits(gaps, gap_bits), codes.size,
                   np.asarray(centroids, dtype=dtype), code_bits, gap_bits, at=at)

    def arrays(self):
        return {"codes": self.codes, "gaps": self.gaps,
                "count": self._count, "centroids": self.centroids}

    def options(self):
        return {"code_bits": self.code_bits, "gap_bits": self.gap_bits}

    def operand(self):
        return SparseCodebookArrays(self.entries_layout, self.centroids, self.row_entry)

    def entries(self):
        """Unpacked (codes, gaps, positions) of the whole stream."""
        codes = unpack_bits(self.codes, self.count, self.code_bits)
        gaps = unpack_bits(self.gaps, self.count, self.gap_bits)
        return codes, gaps, np.cumsum(gaps.astype(np.int64) + 1) - 1

    def max_row_entries(self):
        return int(np.diff(self.row_entry).max(initial=0))

    def stored_entries(self):
        return self.count

    def to_dense(self):
        codes, _, positions = self.entries()
        out = np.zeros(self.size, dtype=self.dtype)
        out[positions] = self.centroids[codes]
        return out.reshape(self.shape)

    def nnz(self):
        codes, _, _ = self.entries()
        return int(np.count_nonzero(self.centroids[codes]))

    def fillers(self):
        return int((self.entries()[0] == 0).sum())

    def slot_grads(self, dvalues):
        """{"centroids": …} from the kernels' per-code sums; code 0 (zero) is never trained."""
        dvalues = dvalues.astype(self.dtype, copy=True)
        dvalues[0] = 0
        return {"centroids": dvalues}

    def reduce_dense_grad(self, dweight):
        """{"centroids": Σ of dL/dW over each code's stored positions} (DC eq. 3)."""
        codes, _, positions = self.entries()
        g = np.bincount(codes, weights=dweight.reshape(-1)[positions], minlength=self.centroids.size)
        return self.slot_grads(g)

    def stored_nbytes(self):
        # header: the dense header, the two bit widths, and the entry count (uint32)
        return {"codes": self.codes.nbytes, "gaps": self.gaps.nbytes,
                "centroids": self.centroids.size * 4, "header": HEADER_BYTES + 6}

    def runtime_nbytes(self):
        """The row index and the execution entries built at load (not stored)."""
        return self.row_entry.nbytes + self.row_prev.nbytes + self.entries_layout.nbytes


class DecodedAtLoad(SparseCodebookWeight):
    """A sparse codebook whose entry streams are entropy-coded on disk (rans, cm) and decoded
    once at load into the packed codes and gaps the sparse kernels compute on; a subclass keeps
    its coded streams and says how to store them."""

    @classmethod
    def from_sparse_codebook(cls, weight, *, at=None):
        """Code a SparseCodebookWeight's codes and gaps."""
        raise NotImplementedError

    @classmethod
    def from_dense(cls, weight, code_bits=8, gap_bits=4, *, centroids=None, dtype=None, at=None):
        at = cls.kind if at is None else at
        return cls.from_sparse_codebook(SparseCodebookWeight.from_dense(
            weight, code_bits, gap_bits, centroids=centroids, dtype=dtype, at=at), at=at)

    def decoded(self):
        """The same weight as a plain SparseCodebookWeight (shares the centroids)."""
        out = SparseCodebookWeight(self.shape, self.codes, self.gaps, self.count, self.centroids,
                                   self.code_bits, self.gap_bits)
        out.centroids = self.centroids
        return out

    def entry_bits(self):
        """(code bits, gap bits) per entry as stored, for the size report."""
        raise NotImplementedError
