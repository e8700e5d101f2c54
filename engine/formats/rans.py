"""rANS entropy coding (range asymmetric numeral systems: Duda, "Asymmetric numeral systems",
2009/2013) of small-integer symbol streams, with static frequencies stored beside each stream.

Each stream has its own frequency table: symbol s has f_s ≥ 1 slots (if used) of M = 2^12,
Σ f_s = M, c_s = Σ_{t<s} f_t (``normalize``). The coder keeps one state x ∈ [L, 256·L),
L = 2^23, and moves bytes in and out (byte-wise renormalisation):

    encode s (symbols taken last to first):  while x ≥ 256·(L/M)·f_s: emit x mod 256, x ← ⌊x/256⌋
                                             x ← ⌊x/f_s⌋·M + (x mod f_s) + c_s
    decode (first to last):  slot = x mod M;  s = the symbol with c_s ≤ slot < c_s + f_s
                             x ← f_s·⌊x/M⌋ + slot − c_s;  while x < L: x ← 256·x + next byte

Decoding is table-driven: a table of M entries gives each slot's symbol. The stream is the
final state (4 bytes, little-endian) followed by the emitted bytes in the order the decoder
reads them. The encoder starts from x = L, so a stream is whole exactly when decoding its
symbol count ends at x = L having read its last byte: truncation, trailing bytes and corrupt
bytes that change the state are refused (corrupt bytes that keep it are symbols like any
others, as in any entropy code without a checksum).

Every decoder read is bounded by the stream's length; corrupt input gives an error code, never
an out-of-bounds read. Sizes: f_s ≤ M fits uint16; the state fits 32 bits, computed in int64.
"""

import numpy as np
from numba import njit

from .._jit import JIT

PROB_BITS = 12
M = 1 << PROB_BITS
L = 1 << 23  # the state's lower bound; states lie in [L, 256·L)
STATE_BYTES = 4
MAX_ALPHABET = 256  # codes and gaps of at most 8 bits

# decode_into's status codes (spelled as literals in the kernel)
OK = 0
PAST_END = -1
BAD_STATE = -2
NOT_WHOLE = -3
_REASONS = {PAST_END: "the stream ends before its symbols do (truncated)",
            BAD_STATE: "the initial state is outside [2^23, 2^31)",
            NOT_WHOLE: "decoding does not end at the encoder's start state and the stream's "
                       "last byte (corrupt or trailing bytes)"}


def normalize(counts):
    """Frequencies f (uint16, Σ f = M) for symbol ``counts``: every used symbol ≥ 1 slot, the
    rest in proportion, then adjusted one slot at a time where it costs the fewest bits
    (Σ counts · log2(1/f) is what the stream's length approaches). Empty: an empty table."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.uint16)
    if np.count_nonzero(counts) > M:
        raise ValueError(f"rANS: more than {M} symbols in use")
    f = np.floor(counts * (M / total)).astype(np.int64)
    f[(counts > 0) & (f == 0)] = 1
    c = counts.astype(np.float64)
    while f.sum() < M:  # the slot that saves the most bits
        gain = np.where(counts > 0, c * np.log2((f + 1) / np.maximum(f, 1)), -1.0)
        f[int(np.argmax(gain))] += 1
    while f.sum() > M:  # the slot whose loss costs the fewest bits
        shrink = f > 1
        loss = np.full(f.size, np.inf)
        loss[shrink] = c[shrink] * np.log2(f[shrink] / (f[shrink] - 1))
        f[int(np.argmin(loss))] -= 1
    return f.astype(np.uint16)


def trim(freqs):
    """The table without its unused tail (the stored form)."""
    used = np.flatnonzero(freqs)
    return freqs[:used[-1] + 1] if used.size else freqs[:0]


def cumulative(freqs):
    """c_s = Σ_{t<s} f_t, int64."""
    return np.concatenate([[0], np.cumsum(freqs.astype(np.int64))[:-1]]) if freqs.size \
        else np.zeros(0, np.int64)


def slot_table(freqs):
    """The decoder's table: the symbol of each of the M slots (uint8)."""
    if freqs.size == 0:
        return np.zeros(M, np.uint8)
    return np.repeat(np.arange(freqs.size, dtype=np.uint8), freqs.astype(np.int64))


@njit(**JIT)
def encode_into(symbols, freqs, cums, out):
    # symbols: (n,) each with freqs[s] ≥ 1 (checked by the caller); out: (≥ 2n + 4,) bytes
    # → the start of the stream in out (the stream is out[start:]); see the module docstring
    x = np.int64(1 << 23)
    pos = out.shape[0]
    for i in range(symbols.shape[0] - 1, -1, -1):
        s = symbols[i]
        f = np.int64(freqs[s])
        top = np.int64(((1 << 23) >> 12) << 8) * f
        while x >= top:
            pos -= 1
            out[pos] = x & 255
            x >>= 8
        x = (x // f << 12) + x % f + cums[s]
    for k in range(3, -1, -1):
        pos -= 1
        out[pos] = (x >> (8 * k)) & 255
    return pos  # the state little-endian at out[pos:pos + 4], then the bytes in decode order


@njit(**JIT)
def _start(data):
    # → (state, next byte) or (-1, ...) if the stream has no state
    if data.shape[0] < 4:
        return np.int64(-1), 4
    x = (np.int64(data[0]) | (np.int64(data[1]) << 8) | (np.int64(data[2]) << 16)
         | (np.int64(data[3]) << 24))
    return x, 4


@njit(**JIT)
def decode_into(data, freqs, cums, slots, n, out):
    # data: (bytes,) a stream; freqs, cums: (alphabet,); slots: (M,) slot → symbol; out: (≥ n,)
    # → 0, or a negative status (module docstring); reads only data[0 : len(data)]
    x, pos = _start(data)
    if x < 0:
        return -1
    if x < (1 << 23) or x >= (1 << 31):
        return -2
    size = data.shape[0]
    for i in range(n):
        slot = x & 4095
        s = slots[slot]
        out[i] = s
        x = np.int64(freqs[s]) * (x >> 12) + slot - cums[s]
        while x < (1 << 23):
            if pos >= size:
                return -1
            x = (x << 8) | np.int64(data[pos])
            pos += 1
    if x != (1 << 23) or pos != size:
        return -3
    return 0


@njit(**JIT)
def decode_pair_into(data_a, freqs_a, cums_a, slots_a, out_a, data_b, freqs_b, cums_b, slots_b,
                     out_b, n):
    # Two streams of n symbols each (a sparse codebook's codes and gaps), decoded in one loop:
    # their two state chains are independent, so the CPU overlaps them.
    # → 0 or the first negative status (of a, then b)
    xa, pa = _start(data_a)
    xb, pb = _start(data_b)
    if xa < 0 or xb < 0:
        return -1
    if xa < (1 << 23) or xa >= (1 << 31) or xb < (1 << 23) or xb >= (1 << 31):
        return -2
    sa = data_a.shape[0]
    sb = data_b.shape[0]
    for i in range(n):
        slot = xa & 4095
        s = slots_a[slot]
        out_a[i] = s
        xa = np.int64(freqs_a[s]) * (xa >> 12) + slot - cums_a[s]
        slot = xb & 4095
        t = slots_b[slot]
        out_b[i] = t
        xb = np.int64(freqs_b[t]) * (xb >> 12) + slot - cums_b[t]
        while xa < (1 << 23):
            if pa >= sa:
                return -1
            xa = (xa << 8) | np.int64(data_a[pa])
            pa += 1
        while xb < (1 << 23):
            if pb >= sb:
                return -1
            xb = (xb << 8) | np.int64(data_b[pb])
            pb += 1
    if xa != (1 << 23) or pa != sa or xb != (1 << 23) or pb != sb:
        return -3
    return 0


def encode(symbols, alphabet_size=MAX_ALPHABET, *, freqs=None):
    """Symbols (ints in [0, alphabet_size ≤ 256)) → (stream bytes uint8, trimmed freqs uint16).
    ``freqs``: a table to code with (default: ``normalize`` of the symbols' counts)."""
    symbols = np.ascontiguousarray(symbols)
    if not 1 <= alphabet_size <= MAX_ALPHABET:
        raise ValueError(f"rANS: alphabet size must be 1..{MAX_ALPHABET}, got {alphabet_size}")
    if symbols.size and (symbols.min() < 0 or symbols.max() >= alphabet_size):
        raise ValueError(f"rANS: symbols must lie in [0, {alphabet_size})")
    symbols = symbols.astype(np.uint8)
    if freqs is None:
        freqs = normalize(np.bincount(symbols, minlength=alphabet_size))
    freqs = trim(np.asarray(freqs, dtype=np.uint16))
    if symbols.size and (symbols.max() >= freqs.size or (freqs[symbols] == 0).any()):
        raise ValueError("rANS: a symbol has no frequency in the table")
    out = np.empty(2 * symbols.size + STATE_BYTES, np.uint8)
    start = encode_into(symbols, freqs, cumulative(freqs), out)
    return out[start:].copy(), freqs


def check_freqs(freqs, alphabet_size, count, at):
    """A stored frequency table: ≤ alphabet_size entries summing to M (empty for no symbols)."""
    if freqs.size > alphabet_size:
        raise ValueError(f"{at}: {freqs.size} frequencies for an alphabet of {alphabet_size}")
    if freqs.size and freqs.max() > M:
        raise ValueError(f"{at}: a frequency exceeds {M}")
    total = int(freqs.astype(np.int64).sum())
    if count and total != M:
        raise ValueError(f"{at}: the frequencies sum to {total}, not {M}")
    if count and freqs[-1] == 0:
        raise ValueError(f"{at}: the frequency table has an unused tail (store it trimmed)")
    return freqs.astype(np.uint16)


def decode(data, freqs, count, *, name="rANS stream"):
    """All ``count`` symbols of a stream (uint8); one-line ValueError naming ``name`` if the
    stream is not whole. The caller checked the table (``check_freqs``) and bounded ``count``."""
    out = np.empty(count, np.uint8)
    status = decode_into(data, freqs, cumulative(freqs), slot_table(freqs), count, out)
    if status != OK:
        raise ValueError(f"{name}: {_REASONS[status]}")
    return out


def decode_pair(a, b, count, *, name="rANS streams"):
    """Two (data, freqs) streams of ``count`` symbols each → (symbols a, symbols b)."""
    out_a, out_b = np.empty(count, np.uint8), np.empty(count, np.uint8)
    status = decode_pair_into(a[0], a[1], cumulative(a[1]), slot_table(a[1]), out_a,
                              b[0], b[1], cumulative(b[1]), slot_table(b[1]), out_b, count)
    if status != OK:
        raise ValueError(f"{name}: {_REASONS[status]}")
    return out_a, out_b
