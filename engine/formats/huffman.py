"""Canonical Huffman coding of small-integer symbol streams, decoded block by block in Numba.

Deep Compression (Han, Mao & Dally, ICLR 2016, §4) Huffman-codes a pruned, quantized layer's
codebook indices (symbols 0..255) and relative-position gaps (0..31). Here a stream is cut into
blocks, one per weight-matrix row, and the bit where each block starts is stored, so that a
kernel decodes the entries of row o by itself (``decode_block_into``) and rows in parallel.

The stream (``HuffmanStream``):

- Codes are canonical (DEFLATE's, RFC 1951 §3.2.2): sorted by (length, symbol), each code is
  the previous one plus 1, shifted left when the length grows. The code-length table alone
  defines the code.
- Bit order is MSB first, as in JPEG and ``np.packbits``' default: stream bit i is
  ``bits[i >> 3] >> (7 − (i & 7)) & 1``, and a code's most significant bit comes first. The
  next k bits read as an integer are then a left-justified code, which is what a table
  lookup wants (DEFLATE packs LSB first and must bit-reverse its codes instead).
- Blocks follow each other with no padding; the unused low bits of the last byte are zero.
- Codes are at most ``MAX_LENGTH`` = 32 bits. A code fits a uint32, and any code fits the
  decoder's 64-bit window, which holds ≥ 56 bits after a refill: one refill, one lookup and at
  most 32 − ``primary_bits`` comparisons per symbol. The limit costs nothing in practice: a
  Huffman code of length l needs a stream of at least Fibonacci F(l + 2) symbols, so lengths
  above 32 appear only in streams of at least F(35) = 9,227,465 symbols, and there
  ``code_lengths`` returns the optimal length-limited code instead (package-merge), whose
  average length stays below entropy + 1 − log2(1 − n·2⁻³²) bits for n used symbols (see
  ``code_lengths``): 9·10⁻⁸ bits above the unlimited bound for n = 256.

The decoder is table-driven: a primary table indexed by the next ``primary_bits`` (≤ 10) bits
gives symbol and length of every short code at once; a longer code falls through to the
canonical first-code-per-length search (Moffat & Turpin, "On the implementation of minimum
redundancy prefix codes", 1997). Every read of ``bits`` is bounded by the array's length (the
window is padded with zeros past it) and every code by ``nbits``: corrupt input gives an error
code, never an out-of-bounds read.
"""

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from .._jit import JIT, JIT_PARALLEL

MAX_LENGTH = 32  # longest code (bits); see the module docstring
MAX_ALPHABET = 1 << 16  # symbols 0..65535: decoded streams fit uint16, table entries int32
# Primary table: 2**10 int32 entries (4 KiB, in L1); longer codes take the slow path. On 10 M
# symbols of a geometric (0.97^k) 256-symbol stream, 6.5 bits/symbol, one core decoded
# 214 / 233 / 242 / 246 M symbols/s with 9 / 10 / 11 / 12 bits: 10 is within 5 % of 12 with a
# quarter of its table.
PRIMARY_BITS = 10
# The stored header: nbits (uint64), nblocks (uint64), alphabet_size (uint32), and one byte
# holding the widths of the two block tables (2 bits each: uint16, uint32 or uint64).
HEADER_BYTES = 8 + 8 + 4 + 1

# decode_block_into's error codes (the kernel spells them as literals: kernels read no globals)
INVALID_CODE = -1
PAST_END = -2
BAD_ARGUMENTS = -3
_REASONS = {
    INVALID_CODE: "a bit pattern matches no code",
    PAST_END: "a code runs past the end of the bitstream (truncated stream or corrupt block table)",
    BAD_ARGUMENTS: "bit start, symbol count or output buffer out of range",
}


# ---------------------------------------------------------------------------------------------
# Code construction


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _int_array(a, what, at):
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{at}: {what} must be integers, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{at}: {what} must have 1 axis, got shape {a.shape}")
    return np.ascontiguousarray(a)


def _package_merge(weights, limit):
    """Optimal code lengths, none above ``limit``, for ascending ``weights`` (n ≥ 2, 2**limit ≥ n).

    Larmore & Hirschberg's package-merge as the coin collector's problem: list 0 is the
    leaves; list t merges the leaves with the pairwise sums ("packages") of list t − 1. The
    first 2n − 2 items of list limit − 1 are the cheapest selection, and a leaf's code length is
    the number of lists in which it is selected. Selections are prefixes: the first m items of
    list t hold the first a leaves and the first m − a packages, which are built from the first
    2(m − a) items of list t − 1, so only the leaf count per list is needed.
    """
    n = weights.size
    leaf_flags = [np.ones(n, dtype=bool)]
    current = weights
    for _ in range(limit - 1):
        pairs = current.size // 2
        packages = current[0:2 * pairs:2] + current[1:2 * pairs:2]
        merged = np.concatenate([weights, packages])
        order = np.argsort(merged, kind="stable")  # leaves before packages on ties
        current = merged[order]
        leaf_flags.append(order < n)
    lengths = np.zeros(n, dtype=np.int64)
    m = 2 * n - 2
    for flags in reversed(leaf_flags):
        leaves = int(np.count_nonzero(flags[:m]))
        lengths[:leaves] += 1
        m = 2 * (m - leaves)
    return lengths


def code_lengths(counts, max_length=MAX_LENGTH):
    """Code length (bits) per symbol of an optimal prefix code for ``counts`` → uint8 array.

    ``counts[s]`` is how often symbol s occurs (non-negative integers); unused symbols get
    length 0 and a lone used symbol gets length 1. No code exceeds ``max_length`` (1..32): when
    plain Huffman would go deeper, the result is the optimal length-limited code
    (package-merge), otherwise it has Huffman's optimal cost Σ counts·lengths. Ties between
    equal counts are broken by symbol, so the result is deterministic.

    The limited code still averages less than H + 1 − log2(1 − n·2^−max_length) bits per
    symbol (H the entropy, n the used symbols): the Shannon code of the mixture
    q = (1 − ε)p + ε/n with ε = n·2^−max_length has lengths ⌈−log2 q⌉ ≤ max_length and
    Σ p·⌈−log2 q⌉ < 1 + H − log2(1 − ε), and the optimal limited code is no longer.
    """
    at = "code_lengths"
    counts = _int_array(counts, "counts", at)
    if counts.size > MAX_ALPHABET:
        raise ValueError(f"{at}: {counts.size} symbols exceed the largest alphabet {MAX_ALPHABET}")
    if counts.size and counts.min() < 0:
        raise ValueError(f"{at}: counts must be non-negative, found {counts.min()}")
    if not _is_int(max_length) or not 1 <= max_length <= MAX_LENGTH:
        raise ValueError(f"{at}: max_length must be an integer in 1..{MAX_LENGTH}, "
                         f"got {max_length!r}")
    lengths = np.zeros(counts.size, dtype=np.uint8)
    used = np.flatnonzero(counts)
    n = used.size
    if n == 0:
        return lengths
    if n == 1:
        lengths[used] = 1
        return lengths
    if n > 1 << max_length:
        raise ValueError(f"{at}: {n} symbols cannot have distinct codes of at most {max_length} bits")
    weights = counts[used].astype(np.int64)
    # Package sums stay below max_length × the total; keep them exact in int64.
    if int(counts[used].astype(np.float64).sum()) > (1 << 62) // MAX_LENGTH:
        raise ValueError(f"{at}: the counts' total exceeds {(1 << 62) // MAX_LENGTH}")
    order = np.argsort(weights, kind="stable")
    # No optimal code is longer than n − 1 bits, so fewer lists suffice for small alphabets.
    lengths[used[order]] = _package_merge(weights[order], min(max_length, n - 1))
    return lengths


def _check_lengths(lengths, at, *, complete=False):
    """Code lengths as uint8, each ≤ MAX_LENGTH, not over-subscribed (Kraft sum ≤ 1).

    With ``complete``, also what ``code_lengths`` always gives: Kraft sum exactly 1 for two or
    more used symbols, length 1 for a lone symbol. Returns (lengths, used symbols, Kraft sum·2^32).
    """
    lengths = np.asarray(lengths)
    if lengths.dtype.kind not in "iu" or lengths.ndim != 1:
        raise ValueError(f"{at}: code lengths must be a 1-D integer array, got "
                         f"{lengths.dtype} shape {lengths.shape}")
    if lengths.size > MAX_ALPHABET:
        raise ValueError(f"{at}: {lengths.size} code lengths exceed the largest alphabet "
                         f"{MAX_ALPHABET}")
    if lengths.size and (lengths.min() < 0 or lengths.max() > MAX_LENGTH):
        raise ValueError(f"{at}: code lengths must lie in 0..{MAX_LENGTH}, found "
                         f"{lengths.min()}..{lengths.max()}")
    lengths = lengths.astype(np.uint8)
    used = np.flatnonzero(lengths)
    # Kraft sum Σ 2^−l scaled by 2^32: exact in int64 for ≤ 2^16 symbols.
    kraft = int((np.int64(1) << (MAX_LENGTH - lengths[used].astype(np.int64))).sum())
    if kraft > 1 << MAX_LENGTH:
        raise ValueError(f"{at}: code lengths are over-subscribed: Kraft sum "
                         f"{kraft / 2 ** MAX_LENGTH:.6g} > 1, so no prefix code has them")
    if complete:
        if used.size == 1 and lengths[used[0]] != 1:
            raise ValueError(f"{at}: a lone symbol's code must have length 1, got {lengths[used[0]]}")
        if used.size >= 2 and kraft != 1 << MAX_LENGTH:
            raise ValueError(f"{at}: code lengths are incomplete: Kraft sum "
                             f"{kraft / 2 ** MAX_LENGTH:.6g} < 1 (Huffman codes have exactly 1)")
    return lengths, used, kraft


def _canonical_layout(lengths, used):
    """(order, first, offset): used symbols in canonical order (length, then symbol); per length
    l, the first code and the position in ``order`` of its first symbol."""
    order = used[np.argsort(lengths[used], kind="stable")]
    per_length = np.bincount(lengths[used], minlength=MAX_LENGTH + 1)
    per_length[0] = 0
    first = np.zeros(MAX_LENGTH + 1, dtype=np.int64)
    offset = np.zeros(MAX_LENGTH + 1, dtype=np.int64)
    code = 0
    for l in range(1, MAX_LENGTH + 1):
        code = (code + int(per_length[l - 1])) << 1
        first[l] = code
        offset[l] = offset[l - 1] + per_length[l - 1]
    return order, first, offset, per_length


def canonical_codes(lengths):
    """Canonical code per symbol from code lengths → uint32 array (0 for unused symbols).

    Codes of length l are consecutive integers in symbol order, starting just after the
    shorter codes (left-justified, codes increase in (length, symbol) order). Code bits are
    sent most significant first. Raises ValueError for lengths above 32 or over-subscribed.
    """
    lengths, used, _ = _check_lengths(lengths, "canonical_codes")
    order, first, offset, _ = _canonical_layout(lengths, used)
    codes = np.zeros(lengths.size, dtype=np.uint32)
    l = lengths[order].astype(np.int64)
    codes[order] = first[l] + np.arange(order.size) - offset[l]
    return codes


def entropy_bits(counts):
    """Shannon entropy of the empirical distribution × the number of symbols: Σ c·log2(N / c).

    The least number of bits any symbol-by-symbol code of these counts can take (a Huffman
    code takes less than this + N).
    """
    c = np.asarray(counts, dtype=np.float64)
    c = c[c > 0]
    if c.size == 0:
        return 0.0
    return float((c * np.log2(c.sum() / c)).sum())


def table_dtype(largest):
    """The smallest of uint16, uint32, uint64 that holds ``largest`` (how a table is stored)."""
    for dt in (np.uint16, np.uint32):
        if int(largest) <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


# ---------------------------------------------------------------------------------------------
# The stream


@dataclass(frozen=True)
class HuffmanStream:
    """A canonical-Huffman-coded symbol stream cut into independently decodable blocks.

    bits                  (ceil(nbits / 8),) uint8: the codes, MSB first, blocks back to back
    nbits                 number of meaningful bits in ``bits``
    lengths               (alphabet_size,) uint8: code length per symbol, 0 if unused
    block_symbol_starts   (nblocks + 1,) int64: block b holds symbols [s[b], s[b + 1])
    block_bit_starts      (nblocks + 1,) int64: block b's codes occupy bits [p[b], p[b + 1])
    alphabet_size         symbols are 0 .. alphabet_size − 1
    """

    bits: np.ndarray
    nbits: int
    lengths: np.ndarray
    block_symbol_starts: np.ndarray
    block_bit_starts: np.ndarray
    alphabet_size: int

    @property
    def nblocks(self):
        return self.block_symbol_starts.size - 1

    @property
    def nsymbols(self):
        return int(self.block_symbol_starts[-1])

    def nbytes(self):
        """{part: bytes} as stored: the bitstream; the code-length table at one byte per
        alphabet symbol; each block table at the width of ``table_dtype`` of its largest value
        (its last entry); and the ``HEADER_BYTES`` header."""
        entries = self.block_symbol_starts.size
        return {
            "bits": (int(self.nbits) + 7) // 8,
            "lengths": int(self.alphabet_size),
            "block_symbol_starts": entries * table_dtype(self.nsymbols).itemsize,
            "block_bit_starts": entries * table_dtype(self.nbits).itemsize,
            "header": HEADER_BYTES,
        }

    def stored_bytes(self):
        """Total stored bytes (the sum of ``nbytes``)."""
        return int(sum(self.nbytes().values()))


@njit(**JIT)
def _pack_codes(symbols, codes, lengths, block_starts, bits, block_bit_starts):
    # symbols: (n,); codes, lengths: (alphabet,); block_starts: (nblocks + 1,) symbol indices
    # bits: (ceil(nbits / 8),) uint8, every byte written; block_bit_starts: (nblocks + 1,) ← bit
    # where each block starts. Codes are shifted into a 64-bit accumulator whose low ``held``
    # bits (< 8 + 32) are not yet written; whole bytes leave from the top, MSB first.
    acc = np.uint64(0)
    held = np.int64(0)
    byte = np.int64(0)
    pos = np.int64(0)
    nblocks = block_starts.shape[0] - 1
    for b in range(nblocks):
        block_bit_starts[b] = pos
        for i in range(block_starts[b], block_starts[b + 1]):
            s = symbols[i]
            l = np.int64(lengths[s])
            acc = (acc << np.uint64(l)) | np.uint64(codes[s])
            held += l
            pos += l
            while held >= 8:
                held -= 8
                bits[byte] = np.uint8((acc >> np.uint64(held)) & np.uint64(0xFF))
                byte += 1
    block_bit_starts[nblocks] = pos
    if held > 0:
        bits[byte] = np.uint8((acc << np.uint64(8 - held)) & np.uint64(0xFF))


def _block_starts(block_starts, n, at):
    if block_starts is None:
        return np.array([0, n], dtype=np.int64)
    starts = _int_array(block_starts, "block_starts", at).astype(np.int64)
    if starts.size == 0 or starts[0] != 0 or starts[-1] != n:
        raise ValueError(f"{at}: block_starts must run from 0 to the number of symbols {n}, got "
                         f"{'nothing' if starts.size == 0 else f'{starts[0]} .. {starts[-1]}'}")
    if starts.size > 1 and (np.diff(starts) < 0).any():
        b = int(np.flatnonzero(np.diff(starts) < 0)[0])
        raise ValueError(f"{at}: block_starts must never decrease, but block {b} starts at "
                         f"{starts[b]} and block {b + 1} at {starts[b + 1]}")
    return starts


def encode(symbols, block_starts=None, alphabet_size=None, *, lengths=None,
           max_length=MAX_LENGTH, name="encode"):
    """Huffman-code ``symbols`` → HuffmanStream.

    symbols        (n,) non-negative integers < alphabet_size
    block_starts   (nblocks + 1,) non-decreasing, from 0 to n: block b is
                   symbols[block_starts[b]:block_starts[b + 1]] (empty blocks allowed);
                   default one block
    alphabet_size  default max(symbols) + 1 (0 for no symbols)
    lengths        a code to use instead of the optimal one for these symbols, e.g. one shared
                   by several streams: (alphabet_size,) complete code lengths (Kraft sum 1, or
                   a lone length 1) covering every symbol that occurs
    max_length     longest code when the code is built here (1..32)

    Raises TypeError for non-integer input, ValueError naming ``name`` otherwise.
    """
    at = name
    symbols = _int_array(symbols, "symbols", at)
    n = symbols.size
    if n and symbols.min() < 0:
        raise ValueError(f"{at}: symbols must be non-negative, found {symbols.min()}")
    largest = int(symbols.max()) if n else -1
    if alphabet_size is None:
        alphabet_size = len(lengths) if lengths is not None else largest + 1
    if not _is_int(alphabet_size) or not 0 <= alphabet_size <= MAX_ALPHABET:
        raise ValueError(f"{at}: alphabet_size must be an integer in 0..{MAX_ALPHABET}, "
                         f"got {alphabet_size!r}")
    alphabet_size = int(alphabet_size)
    if largest >= alphabet_size:
        raise ValueError(f"{at}: symbol {largest} lies outside the alphabet 0..{alphabet_size - 1}")
    starts = _block_starts(block_starts, n, at)
    counts = np.bincount(symbols, minlength=alphabet_size) if n else np.zeros(alphabet_size, np.int64)
    if lengths is None:
        lengths = code_lengths(counts, max_length)
    else:
        lengths, _, _ = _check_lengths(lengths, at, complete=True)
        if lengths.size != alphabet_size:
            raise ValueError(f"{at}: {lengths.size} code lengths for an alphabet of {alphabet_size}")
        missing = np.flatnonzero((counts > 0) & (lengths == 0))
        if missing.size:
            raise ValueError(f"{at}: symbol {missing[0]} occurs {counts[missing[0]]} times but "
                             f"has no code")
    codes = canonical_codes(lengths)
    nbits = int((counts.astype(np.int64) * lengths.astype(np.int64)).sum())
    bits = np.empty((nbits + 7) // 8, dtype=np.uint8)
    block_bit_starts = np.empty(starts.size, dtype=np.int64)
    _pack_codes(symbols, codes, lengths, starts, bits, block_bit_starts)
    return HuffmanStream(bits, nbits, lengths, starts, block_bit_starts, alphabet_size)


# ---------------------------------------------------------------------------------------------
# Decoding


class DecodeTables(NamedTuple):
    """What ``decode_block_into`` needs besides the bits, in its argument order.

    primary         (2**primary_bits,) int32: entry v = symbol << 8 | length for the code that
                    the primary_bits-bit prefix v starts with, if length ≤ primary_bits; 0 if
                    v starts a longer code or no code
    primary_bits    1..PRIMARY_BITS, at most the longest code
    canonical       (3, MAX_LENGTH + 1) int64: per length l, the first canonical code of that
                    length, how many codes have it, and where its symbols start in sorted_symbols
    sorted_symbols  (used symbols,) int32: the symbols in canonical order (length, then symbol)
    """

    primary: np.ndarray
    primary_bits: int
    canonical: np.ndarray
    sorted_symbols: np.ndarray


def decode_tables(lengths):
    """Decoder tables for a code given by its lengths → DecodeTables.

    Raises ValueError for lengths above 32 or over-subscribed (incomplete codes are allowed:
    the decoder reports bit patterns that match no code).
    """
    lengths, used, _ = _check_lengths(lengths, "decode_tables")
    order, first, offset, per_length = _canonical_layout(lengths, used)
    longest = int(lengths.max()) if used.size else 1
    primary_bits = max(1, min(PRIMARY_BITS, longest))
    short = order[lengths[order] <= primary_bits]
    l = lengths[short].astype(np.int64)
    entries = (short.astype(np.int64) << 8) | l
    spread = np.repeat(entries, np.int64(1) << (primary_bits - l))
    # Canonical codes are increasing left-justified: the short codes' table ranges tile a prefix.
    primary = np.zeros(1 << primary_bits, dtype=np.int32)
    primary[:spread.size] = spread
    canonical = np.stack([first, per_length.astype(np.int64), offset])
    return DecodeTables(primary, primary_bits, canonical, order.astype(np.int32))


@njit(**JIT)
def window_refill(bits, byte, window, avail):
    # bits: (B,) uint8, MSB-first; window: the stream from some bit on, MSB-aligned, of which
    # ``avail`` bits are loaded, and byte · 8 is the stream bit just after them
    # → (byte, window, avail) with ≥ 56 bits loaded: eight bytes in one big-endian word where
    # eight remain (the word's bits past the whole bytes taken are the stream's own, so OR-ing
    # them in twice is harmless), else byte by byte with zeros past the end of ``bits``
    nbytes = np.int64(bits.shape[0])
    if byte + 8 <= nbytes:
        i = np.uint64(byte)  # unsigned: no negative-index wraparound
        word = ((np.uint64(bits[i]) << np.uint64(56)) | (np.uint64(bits[i + 1]) << np.uint64(48))
                | (np.uint64(bits[i + 2]) << np.uint64(40)) | (np.uint64(bits[i + 3]) << np.uint64(32))
                | (np.uint64(bits[i + 4]) << np.uint64(24)) | (np.uint64(bits[i + 5]) << np.uint64(16))
                | (np.uint64(bits[i + 6]) << np.uint64(8)) | np.uint64(bits[i + 7]))
        window |= word >> np.uint64(avail)
        step = (63 - avail) >> 3
        return byte + step, window, avail + 8 * step
    while avail < 56:
        if byte < nbytes:
            window |= np.uint64(bits[byte]) << np.uint64(56 - avail)
        byte += 1
        avail += 8
    return byte, window, avail


@njit(**JIT)
def window_at(bits, pos):
    # → (byte, window, avail) for the stream from bit pos ≥ 0 on (see window_refill), avail ≥ 49
    byte, window, avail = window_refill(bits, pos >> 3, np.uint64(0), np.int64(0))
    skip = pos & 7
    return byte, window << np.uint64(skip), avail - skip


# Zero bytes after a stream's last byte in memory (not stored), so that a kernel reads the
# window at any bit of the stream with one 8-byte read and no end-of-stream branch
# (``window_from``): that branch and window_at's general refill bookkeeping doubled the batch-1
# Huffman walk's time.
PAD_BYTES = 8


def padded(bits):
    """A copy of ``bits`` followed in memory by ``PAD_BYTES`` zero bytes → the (len(bits),) view
    of it; kernels read past the view's end through ``padded_buffer``."""
    buffer = np.zeros(bits.size + PAD_BYTES, dtype=np.uint8)
    buffer[:bits.size] = bits
    return buffer[:bits.size]


def padded_buffer(view):
    """The whole buffer behind a ``padded`` view (the stream and its zero bytes)."""
    buffer = view.base
    if not (isinstance(buffer, np.ndarray) and buffer.size == view.size + PAD_BYTES):
        raise ValueError("a stream that kernels read must come from huffman.padded")
    return buffer


@njit(**JIT)
def window_from(buffer, pos):
    # buffer: a ``padded_buffer``; pos: a bit of its stream (0 ≤ pos ≤ its bits)
    # → the window of the stream from bit pos on, ≥ 57 bits loaded: one big-endian 8-byte read
    # shifted by pos & 7 (the padding keeps the read inside the buffer)
    i = np.uint64(pos >> 3)  # unsigned: no negative-index wraparound (offsets np.uint64 too:
    # with ``2 * one`` the walk ran 1.5x slower)
    word = ((np.uint64(buffer[i]) << np.uint64(56))
            | (np.uint64(buffer[i + np.uint64(1)]) << np.uint64(48))
            | (np.uint64(buffer[i + np.uint64(2)]) << np.uint64(40))
            | (np.uint64(buffer[i + np.uint64(3)]) << np.uint64(32))
            | (np.uint64(buffer[i + np.uint64(4)]) << np.uint64(24))
            | (np.uint64(buffer[i + np.uint64(5)]) << np.uint64(16))
            | (np.uint64(buffer[i + np.uint64(6)]) << np.uint64(8)) | np.uint64(buffer[i + np.uint64(7)]))
    return word << np.uint64(pos & 7)


@njit(**JIT)
def window_symbol(window, primary, primary_bits, canonical, sorted_symbols, longest):
    # The symbol whose code begins the window → (symbol, code length); length 0: no code of at
    # most ``longest`` bits matches. A short code is one lookup in the primary table; a longer
    # one's l-bit prefix minus the first code of length l indexes the symbols of that length
    # (canonical codes of one length are consecutive).
    e = np.int64(primary[np.int64(window >> np.uint64(64 - primary_bits))])
    length = e & 0xFF
    if length != 0:
        return e >> 8, length
    for l in range(primary_bits + 1, longest + 1):
        d = np.int64(window >> np.uint64(64 - l)) - canonical[0, l]
        if d >= 0 and d < canonical[1, l]:
            return np.int64(sorted_symbols[canonical[2, l] + d]), np.int64(l)
    return np.int64(0), np.int64(0)


@njit(**JIT)
def decode_block_into(bits, nbits, primary, primary_bits, canonical, sorted_symbols,
                      bit_start, n, out):
    # bits: (B,) uint8, MSB-first stream of nbits bits; primary, primary_bits, canonical,
    # sorted_symbols: DecodeTables of the code; out: (≥ n,) integers
    # out[:n] ← the n symbols whose codes start at bit ``bit_start`` → the bit just after them,
    # or −1: a bit pattern matches no code, −2: a code runs past min(nbits, 8·B),
    # −3: bit_start outside [0, that end], n < 0, n > len(out), or a primary table of the wrong
    # size.
    # Tables must come from decode_tables; the stream may be anything.
    nbytes = np.int64(bits.shape[0])
    end = min(np.int64(nbits), nbytes * 8)
    if bit_start < 0 or bit_start > end or n < 0 or n > out.shape[0]:
        return -3
    if primary_bits < 1 or primary_bits > 32 or primary.shape[0] != np.int64(1) << primary_bits:
        return -3
    longest = canonical.shape[1] - 1
    while longest > 0 and canonical[1, longest] == 0:  # the longest code in use
        longest -= 1
    pos = np.int64(bit_start)
    byte, window, avail = window_at(bits, pos)
    for i in range(n):
        if avail < 32:  # the longest code is 32 bits
            byte, window, avail = window_refill(bits, byte, window, avail)
        symbol, length = window_symbol(window, primary, primary_bits, canonical,
                                       sorted_symbols, longest)
        if length == 0:
            # the bits that match no code reach past the end: the stream was cut short
            return -2 if pos + longest > end else -1
        pos += length
        if pos > end:
            return -2
        out[i] = symbol
        window <<= np.uint64(length)
        avail -= length
    return pos


@njit(**JIT_PARALLEL)
def decode_blocks(bits, nbits, primary, primary_bits, canonical, sorted_symbols,
                  block_bit_starts, block_symbol_starts, out, ends):
    # block_bit_starts, block_symbol_starts: (nblocks + 1,) int64, validated; out: (nsymbols,)
    # ends: (nblocks,) int64 ← decode_block_into's result for each block (rows in parallel)
    for b in prange(ends.shape[0]):
        s0 = block_symbol_starts[b]
        s1 = block_symbol_starts[b + 1]
        ends[b] = decode_block_into(bits, nbits, primary, primary_bits, canonical,
                                    sorted_symbols, block_bit_starts[b], s1 - s0, out[s0:s1])


def _first(mask):
    return int(np.flatnonzero(mask)[0])


def validate(stream, *, name="huffman stream"):
    """Check a HuffmanStream's structure before a kernel touches it; raise ValueError if not.

    Checks: array types, dtypes and ranks; alphabet_size matches the length table; code
    lengths ≤ 32 and a complete prefix code (Kraft sum 1, or one symbol of length 1);
    ``bits`` holds exactly ceil(nbits / 8) bytes with zero padding; both block tables have
    nblocks + 1 entries, start at 0, never decrease and end at the symbol count and nbits; and
    each block's bit span fits its symbol count (between count × shortest and count × longest
    code). The codes themselves are checked while decoding.
    """
    at = name
    s = stream
    for what, a, dt in (("bits", s.bits, np.uint8), ("lengths", s.lengths, np.uint8),
                        ("block_symbol_starts", s.block_symbol_starts, np.int64),
                        ("block_bit_starts", s.block_bit_starts, np.int64)):
        if not isinstance(a, np.ndarray):
            raise ValueError(f"{at}: {what} must be a numpy array, got {type(a).__name__}")
        if a.dtype != dt or a.ndim != 1:
            raise ValueError(f"{at}: {what} must be a 1-D {np.dtype(dt)} array, got "
                             f"{a.dtype} shape {a.shape}")
    if not _is_int(s.alphabet_size) or not 0 <= s.alphabet_size <= MAX_ALPHABET:
        raise ValueError(f"{at}: alphabet_size must be an integer in 0..{MAX_ALPHABET}, "
                         f"got {s.alphabet_size!r}")
    if s.lengths.size != s.alphabet_size:
        raise ValueError(f"{at}: {s.lengths.size} code lengths for an alphabet of {s.alphabet_size}")
    lengths, used, _ = _check_lengths(s.lengths, at, complete=True)
    if not _is_int(s.nbits) or s.nbits < 0:
        raise ValueError(f"{at}: nbits must be a non-negative integer, got {s.nbits!r}")
    nbits = int(s.nbits)
    if s.bits.size != (nbits + 7) // 8:
        raise ValueError(f"{at}: bits holds {s.bits.size} bytes, but nbits = {nbits} needs "
                         f"{(nbits + 7) // 8}")
    if nbits % 8 and s.bits[-1] & ((1 << (8 - nbits % 8)) - 1):
        raise ValueError(f"{at}: the {8 - nbits % 8} padding bits after bit {nbits} are not zero")
    sym, pos = s.block_symbol_starts, s.block_bit_starts
    if sym.size < 1 or pos.size != sym.size:
        raise ValueError(f"{at}: the block tables have {sym.size} and {pos.size} entries; "
                         f"expected nblocks + 1 each")
    for what, t, last in (("block_symbol_starts", sym, None), ("block_bit_starts", pos, nbits)):
        if t[0] != 0:
            raise ValueError(f"{at}: {what} must start at 0, got {t[0]}")
        if (np.diff(t) < 0).any():
            b = _first(np.diff(t) < 0)
            raise ValueError(f"{at}: {what} decreases from block {b} ({t[b]}) to block {b + 1} "
                             f"({t[b + 1]})")
        if last is not None and t[-1] != last:
            raise ValueError(f"{at}: {what} ends at {t[-1]}, expected nbits = {last}")
    count = np.diff(sym)
    span = np.diff(pos)
    if used.size == 0:
        if sym[-1] != 0:
            raise ValueError(f"{at}: the code has no symbols but the blocks hold {sym[-1]}")
        return
    shortest, longest = int(lengths[used].min()), int(lengths[used].max())
    if sym[-1] > (1 << 62) // longest:
        raise ValueError(f"{at}: {sym[-1]} symbols is more than a stream can hold")
    bad = (span < count * shortest) | (span > count * longest)
    if bad.any():
        b = _first(bad)
        raise ValueError(f"{at}: block {b} spans {span[b]} bits for {count[b]} symbols; codes of "
                         f"{shortest}..{longest} bits need {count[b] * shortest}.."
                         f"{count[b] * longest}")


def decode(stream, *, name="huffman stream"):
    """All symbols of a HuffmanStream → uint8 array (uint16 for alphabets above 256).

    ``validate`` runs first; the blocks are then decoded in parallel. Raises ValueError naming
    ``name`` and the block for a corrupt or truncated stream: a bit pattern that matches no
    code, a code past the end, or a block that does not end where the next one starts. A
    corrupted stream can still decode without error: a flipped bit may turn one valid code
    into another of the same length, and code lengths permuted among the used symbols only
    relabel the symbols (the canonical code words depend on the multiset of lengths alone).
    Nothing here detects that; there is no checksum.
    """
    at = name
    validate(stream, name=at)
    tables = decode_tables(stream.lengths)
    sym, pos = stream.block_symbol_starts, stream.block_bit_starts
    out = np.empty(stream.nsymbols, dtype=np.uint8 if stream.alphabet_size <= 256 else np.uint16)
    ends = np.empty(stream.nblocks, dtype=np.int64)
    if ends.size:
        decode_blocks(stream.bits, np.int64(stream.nbits), *tables, pos, sym, out, ends)
    bad = ends != pos[1:]
    if bad.any():
        b = _first(bad)
        where_ = (f"block {b} (symbols {sym[b]}..{sym[b + 1]}, bits {pos[b]}..{pos[b + 1]} "
                  f"of {stream.nbits})")
        if ends[b] < 0:
            raise ValueError(f"{at}: {where_}: {_REASONS.get(int(ends[b]), 'error ' + str(ends[b]))}")
        raise ValueError(f"{at}: {where_}: its codes end at bit {ends[b]}, not where the next "
                         f"block starts (corrupt bits or block table)")
    return out
