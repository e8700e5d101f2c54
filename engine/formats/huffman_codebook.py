"""Huffman-coded sparse codebook weights: Deep Compression's last stage, decoded as kernels run.

The entry stream of a sparse codebook (codes and relative gaps, see sparse_codebook.py) is
Huffman-coded, codes and gaps each with their own canonical code (huffman.py). What is stored is
what Deep Compression stores: the two bitstreams, their code-length tables, the entry count and
the centroids. Loading decodes the streams once, which verifies them (kernels never meet a
corrupt stream) and yields a row index — where each row's entries start in both bitstreams and
the position before the row:

    row o: codes and gaps of entries row_entry[o] .. row_entry[o + 1], decoded from
    code_bit_starts[o] and gap_bit_starts[o]; positions continue from row_prev[o]

The index is derived, like the sparse codebook's, and ``runtime_nbytes`` reports it apart from
the stored size. Kernels decode a row every time they visit it (the streaming path): into the
caller's entry buffers (``row_entries``), or symbol by symbol while computing the row's product
(``row_dot``, ``rows_dot``: the batch-1 walk, two rows at a time); ``decoded()`` is the
optional decode-once cache, the same weight as a SparseCodebookWeight, measured and reported
apart. Each bitstream is kept in memory with ``huffman.PAD_BYTES`` zero bytes after it, so that
the walk reads a window at any bit with one 8-byte read.
"""

from collections import namedtuple

import numpy as np
from numba import njit

from .._jit import JIT, JIT_INLINE
from . import huffman
from .base import (WeightFormat, check_bits, check_bytes, check_structure_array, check_values,
                   register_row_decoder, register_row_direct)
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


@njit(**JIT)
def _long_code(bits, pos, primary, primary_bits, canonical, symbols):
    # The code at stream bit pos that the primary table does not hold (longer than its bits)
    # → (symbol << 8 | length, the window from just after it); (0, 0): no code matches there
    # (impossible in a stream verified at load)
    window = huffman.window_from(bits, pos)
    symbol, length = huffman.window_symbol(window, primary, primary_bits, canonical, symbols,
                                           canonical.shape[1] - 1)
    if length == 0:
        return np.int64(0), np.uint64(0)
    after = huffman.window_from(bits, pos + length)
    return (symbol << 8) | length, after


# The walk's decode step, written out in each walk for each stream: a primary-table lookup
# on the window, its length shifted out; a code longer than the table's bits goes to
# _long_code (a call on the rare path only). A helper holding the step, called per code,
# kept its array arguments' reference counting in the loop: the walk ran 30-70x slower. Numba's
# own inlining (inline="always") of such a step did not help: FC 4096² at 90 %, batch 1, 52 ms
# against 5.7 ms written out.
#     c = np.int64(primary[window >> shift])           # symbol << 8 | length, 0: longer
#     if c == 0: c, window = _long_code(…)
#     else: window <<= np.uint64(c & 255)


@njit(**JIT_INLINE)
def _walk_row(W, cpos, gpos, p, n, x):
    # Σ centroids[code_e] · x[p_e] over the next n entries of a row, its codes from bit cpos of
    # the code stream, its gaps from bit gpos of the gap stream, p_e = p_{e−1} + gap_e + 1 from p
    # Four entries per window: a window holds ≥ 57 bits and four primary codes ≤ 40, so the
    # refill (window_from, one 8-byte read) is once per four entries, not a branch per code; a
    # long code brings a fresh window of its own. A code that matches nothing (impossible in a
    # stream verified at load) ends the walk.
    s = W.centroids[0]  # 0.0 in the values' dtype
    cshift = np.uint64(64 - W.code_primary_bits)
    gshift = np.uint64(64 - W.gap_primary_bits)
    i = 0
    while i < n:
        cw = huffman.window_from(W.code_bits, cpos)
        gw = huffman.window_from(W.gap_bits, gpos)
        for _ in range(min(n - i, 4)):
            c = np.int64(W.code_primary[cw >> cshift])  # symbol << 8 | length
            if c == 0:
                c, cw = _long_code(W.code_bits, cpos, W.code_primary, W.code_primary_bits,
                                   W.code_canonical, W.code_symbols)
            else:
                cw <<= np.uint64(c & 255)
            g = np.int64(W.gap_primary[gw >> gshift])
            if g == 0:
                g, gw = _long_code(W.gap_bits, gpos, W.gap_primary, W.gap_primary_bits,
                                   W.gap_canonical, W.gap_symbols)
            else:
                gw <<= np.uint64(g & 255)
            if c == 0 or g == 0:
                return s
            cpos += c & 255
            gpos += g & 255
            p += (g >> 8) + 1
            s += W.centroids[c >> 8] * x[np.uint64(p)]
        i += 4
    return s


@njit(**JIT)
def huffman_row_dot(W, o, x):
    # x: (K,) → Σ_e centroids[code_e] · x[p_e − o·K] over row o's entries, p_e = p_{e−1} + gap_e + 1
    # EIE on the stored bitstreams: each entry's gap and code are Huffman-decoded as the row is
    # walked (_walk_row), nothing is written. Fillers add centroid 0 = 0.0 · x (no branch).
    return _walk_row(W, W.code_starts[o], W.gap_starts[o], W.row_prev[o] - o * W.ncols,
                     W.row_entry[o + 1] - W.row_entry[o], x)


@njit(**JIT_INLINE)
def huffman_row_pair_dot(W, o, x):
    # x: (K,) → (huffman_row_dot(W, o, x), huffman_row_dot(W, o + 1, x))
    # Each code's length says where the next starts: one row's walk waits on a table lookup per
    # code. Rows o and o + 1 walked together give four independent chains (codes and gaps of
    # each): FC 4096² at 90 % pruned, batch 1, one thread, 7.0 ms against 9.1 ms for one row at
    # a time (both four codes per window) and 12.7 ms for the walk with a refill check per code.
    K = W.ncols
    ca, ga, pa = W.code_starts[o], W.gap_starts[o], W.row_prev[o] - o * K
    cb, gb, pb = W.code_starts[o + 1], W.gap_starts[o + 1], W.row_prev[o + 1] - (o + 1) * K
    na = W.row_entry[o + 1] - W.row_entry[o]
    nb = W.row_entry[o + 2] - W.row_entry[o + 1]
    sa = sb = W.centroids[0]
    both = min(na, nb) & ~3  # whole groups of four entries in both rows
    cshift = np.uint64(64 - W.code_primary_bits)
    gshift = np.uint64(64 - W.gap_primary_bits)
    i = 0
    while i < both:
        cwa = huffman.window_from(W.code_bits, ca)
        gwa = huffman.window_from(W.gap_bits, ga)
        cwb = huffman.window_from(W.code_bits, cb)
        gwb = huffman.window_from(W.gap_bits, gb)
        for _ in range(4):  # the decode step (see above) on each of the four streams
            c = np.int64(W.code_primary[cwa >> cshift])
            if c == 0:
                c, cwa = _long_code(W.code_bits, ca, W.code_primary, W.code_primary_bits,
                                    W.code_canonical, W.code_symbols)
            else:
                cwa <<= np.uint64(c & 255)
            g = np.int64(W.gap_primary[gwa >> gshift])
            if g == 0:
                g, gwa = _long_code(W.gap_bits, ga, W.gap_primary, W.gap_primary_bits,
                                    W.gap_canonical, W.gap_symbols)
            else:
                gwa <<= np.uint64(g & 255)
            d = np.int64(W.code_primary[cwb >> cshift])
            if d == 0:
                d, cwb = _long_code(W.code_bits, cb, W.code_primary, W.code_primary_bits,
                                    W.code_canonical, W.code_symbols)
            else:
                cwb <<= np.uint64(d & 255)
            h = np.int64(W.gap_primary[gwb >> gshift])
            if h == 0:
                h, gwb = _long_code(W.gap_bits, gb, W.gap_primary, W.gap_primary_bits,
                                    W.gap_canonical, W.gap_symbols)
            else:
                gwb <<= np.uint64(h & 255)
            if c == 0 or g == 0 or d == 0 or h == 0:
                return sa, sb
            ca += c & 255
            ga += g & 255
            cb += d & 255
            gb += h & 255
            pa += (g >> 8) + 1
            pb += (h >> 8) + 1
            sa += W.centroids[c >> 8] * x[np.uint64(pa)]
            sb += W.centroids[d >> 8] * x[np.uint64(pb)]
        i += 4
    # the rest of each row
    sa += _walk_row(W, ca, ga, pa, na - i, x)
    sb += _walk_row(W, cb, gb, pb, nb - i, x)
    return sa, sb


@njit(**JIT)
def huffman_row_dot_backward(W, o, g, x, need_input, need_weight, dx, dcentroids):
    # x, dx: (K,); dcentroids: (centroids,), accumulated into
    # dx[k] += g · centroids[code_e];   dcentroids[code_e] += g · x[k]   (k = p_e − o·K; code 0,
    # the zero, gets sums too: slot_grads drops them); decoded as in huffman_row_dot
    gb, gw, ga = huffman.window_at(W.gap_bits, W.gap_starts[o])
    cb, cw, ca = huffman.window_at(W.code_bits, W.code_starts[o])
    glong = W.gap_canonical.shape[1] - 1
    clong = W.code_canonical.shape[1] - 1
    p = W.row_prev[o] - o * W.ncols
    for _ in range(W.row_entry[o + 1] - W.row_entry[o]):
        if ga < 32:
            gb, gw, ga = huffman.window_refill(W.gap_bits, gb, gw, ga)
        if ca < 32:
            cb, cw, ca = huffman.window_refill(W.code_bits, cb, cw, ca)
        gap, gl = huffman.window_symbol(gw, W.gap_primary, W.gap_primary_bits, W.gap_canonical,
                                        W.gap_symbols, glong)
        c, cl = huffman.window_symbol(cw, W.code_primary, W.code_primary_bits, W.code_canonical,
                                      W.code_symbols, clong)
        if gl == 0 or cl == 0:
            break
        gw <<= np.uint64(gl)
        ga -= gl
        cw <<= np.uint64(cl)
        ca -= cl
        p += gap + 1
        if need_input:
            dx[p] += g * W.centroids[c]
        if need_weight:
            dcentroids[c] += g * x[p]


@njit(**JIT)
def huffman_rows_dot(W, lo, hi, x, bias, y):
    # x: (K,); bias, y: (O,) → y[o] = bias[o] + huffman_row_dot(W, o, x), lo ≤ o < hi, the rows
    # walked two at a time (huffman_row_pair_dot)
    for o in range(lo, hi - 1, 2):
        s0, s1 = huffman_row_pair_dot(W, o, x)
        y[o] = bias[o] + s0
        y[o + 1] = bias[o + 1] + s1
    if (hi - lo) & 1:
        y[hi - 1] = bias[hi - 1] + huffman_row_dot(W, hi - 1, x)


register_row_direct(HuffmanArrays, huffman_row_dot, huffman_row_dot_backward, huffman_rows_dot)


@njit(**JIT)
def _row_bit_starts(bits, nbits, primary, primary_bits, canonical, symbols, row_entry, scratch,
                    starts):
    # starts: (rows + 1,) ← the bit where each row's symbols begin, by decoding row after row
    # (the stream was verified whole, so every row decodes); scratch: (≥ longest row,)
    pos = np.int64(0)
    for o in range(row_entry.shape[0] - 1):
        starts[o] = pos
        pos = huffman.decode_block_into(bits, nbits, primary, primary_bits, canonical, symbols,
                                        pos, row_entry[o + 1] - row_entry[o], scratch)
        if pos < 0:
            return pos
    starts[row_entry.shape[0] - 1] = pos
    return pos


class HuffmanCodebookWeight(WeightFormat):
    kind = "huffman"
    sparse = True
    array_names = ("code_stream", "code_lengths", "gap_stream", "gap_lengths", "nbits", "count",
                   "centroids")
    creation_options = ("code_bits", "gap_bits")
    trainable = ("centroids",)
    decay = ()

    def __init__(self, shape, codes, gaps, centroids, code_bits, gap_bits, *, at="huffman"):
        """``codes`` and ``gaps``: HuffmanStreams of the entries' codes and gaps (their block
        tables are not kept: the row index is rebuilt here)."""
        super().__init__(shape, centroids.dtype)
        self.centroids, self.code_bits, self.gap_bits = centroids, int(code_bits), int(gap_bits)
        for label, stream in (("code", codes), ("gap", gaps)):
            huffman.validate(stream, name=f"{at}: {label} stream")
        if codes.nsymbols != gaps.nsymbols:
            raise ValueError(f"{at}: {codes.nsymbols} codes but {gaps.nsymbols} gaps")
        if codes.alphabet_size > 1 << self.code_bits or gaps.alphabet_size > 1 << self.gap_bits:
            raise ValueError(f"{at}: the streams' alphabets exceed {self.code_bits}-bit codes or "
                             f"{self.gap_bits}-bit gaps")
        self.count = codes.nsymbols
        # Decode both streams whole: verifies them, and the positions give the row index.
        entries = SparseCodebookWeight.from_entries(
            shape, huffman.decode(codes, name=f"{at}: code stream"),
            huffman.decode(gaps, name=f"{at}: gap stream"), centroids, self.code_bits,
            self.gap_bits, dtype=self.dtype, at=at)
        self.row_entry, self.row_prev = entries.row_entry, entries.row_prev
        self._code_tables = huffman.decode_tables(codes.lengths)
        self._gap_tables = huffman.decode_tables(gaps.lengths)
        scratch = np.empty(max(entries.max_row_entries(), 1), dtype=np.int64)
        self.codes, self.gaps = (
            huffman.HuffmanStream(huffman.padded(s.bits), s.nbits, s.lengths, self.row_entry,
                                  self._row_starts(s, t, scratch), s.alphabet_size)
            for s, t in ((codes, self._code_tables), (gaps, self._gap_tables)))
        self._nbits = np.array([codes.nbits, gaps.nbits], dtype=np.int64)
        self._count = np.array([self.count], dtype=np.int64)

    def _row_starts(self, stream, tables, scratch):
        starts = np.empty(self.rows + 1, dtype=np.int64)
        end = _row_bit_starts(stream.bits, stream.nbits, tables.primary, tables.primary_bits,
                              tables.canonical, tables.sorted_symbols, self.row_entry, scratch,
                              starts)
        if end != stream.nbits:  # cannot happen for a stream that decoded whole
            raise ValueError("huffman: the rows do not decode to the end of the stream")
        return starts

    @classmethod
    def from_sparse_codebook(cls, weight, *, at="huffman"):
        """Huffman-code a SparseCodebookWeight's codes and gaps."""
        codes, gaps, _ = weight.entries()
        code_stream = huffman.encode(codes, None, 1 << weight.code_bits, name=f"{at}: codes")
        gap_stream = huffman.encode(gaps, None, 1 << weight.gap_bits, name=f"{at}: gaps")
        return cls(weight.shape, code_stream, gap_stream, weight.centroids.copy(),
                   weight.code_bits, weight.gap_bits, at=at)

    @classmethod
    def from_dense(cls, weight, code_bits=8, gap_bits=4, *, centroids=None, dtype=None,
                   at="huffman"):
        return cls.from_sparse_codebook(SparseCodebookWeight.from_dense(
            weight, code_bits, gap_bits, centroids=centroids, dtype=dtype, at=at), at=at)

    @classmethod
    def from_arrays(cls, shape, arrays, options, *, dtype=np.float32, at="huffman"):
        nbits = check_structure_array(np.asarray(arrays["nbits"]), "nbits", at)
        count = check_structure_array(np.asarray(arrays["count"]), "count", at)
        if nbits.shape != (2,) or count.shape != (1,) or (nbits < 0).any() or count[0] < 0:
            raise ValueError(f"{at}: nbits must hold the two streams' bit counts and count the "
                             f"number of entries")
        centroids = check_values(arrays["centroids"], "centroids", at, dtype)
        streams = []
        for i, label in enumerate(("code", "gap")):
            bits = check_bytes(arrays[f"{label}_stream"], f"{label}_stream", at)
            lengths = check_bytes(arrays[f"{label}_lengths"], f"{label}_lengths", at)
            streams.append(huffman.HuffmanStream(
                bits, int(nbits[i]), lengths, np.array([0, count[0]], dtype=np.int64),
                np.array([0, nbits[i]], dtype=np.int64), lengths.size))
        return cls(shape, streams[0], streams[1], centroids,
                   check_bits(options["code_bits"], "code_bits", at),
                   check_bits(options["gap_bits"], "gap_bits", at), at=at)

    def arrays(self):
        return {"code_stream": self.codes.bits, "code_lengths": self.codes.lengths,
                "gap_stream": self.gaps.bits, "gap_lengths": self.gaps.lengths,
                "nbits": self._nbits, "count": self._count, "centroids": self.centroids}

    def options(self):
        return {"code_bits": self.code_bits, "gap_bits": self.gap_bits}

    def operand(self):
        c, g = self._code_tables, self._gap_tables
        return HuffmanArrays(
            huffman.padded_buffer(self.codes.bits), self.codes.nbits, c.primary, c.primary_bits,
            c.canonical, c.sorted_symbols, self.codes.block_bit_starts,
            huffman.padded_buffer(self.gaps.bits), self.gaps.nbits, g.primary, g.primary_bits,
            g.canonical, g.sorted_symbols, self.gaps.block_bit_starts,
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

    def stored_entries(self):
        return self.count

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
        """Both Huffman bitstreams, their code-length tables (a byte per symbol), the
        centroids, and a header (the dense one, the two bit widths, the entry count and the two
        streams' bit counts, 8 bytes each)."""
        return {"code_stream": self.codes.bits.nbytes, "gap_stream": self.gaps.bits.nbytes,
                "huffman_tables": self.codes.lengths.nbytes + self.gaps.lengths.nbytes,
                "centroids": self.centroids.size * 4, "header": HEADER_BYTES + 2 + 3 * 8}

    def runtime_nbytes(self):
        """The row index built at load (not stored): entry starts, bit starts, row_prev."""
        return (self.row_entry.nbytes + self.row_prev.nbytes
                + self.codes.block_bit_starts.nbytes + self.gaps.block_bit_starts.nbytes)
