"""Context-mixing entropy coding of a sparse codebook's entry stream: an adaptive binary
arithmetic coder driven by logistic mixing of several context models, after PAQ8 (Mahoney; the
mixing as in Knoll & de Freitas, "A machine learning perspective on predictive coding with
PAQ8", 2012) and lpaq's carry-less coder. PAQ8 models general data; this model knows the
stream's structure: entries of (gap, code), positions in rows of ``ncols``, and a period (the
kernel's spatial size for a convolution).

Symbols. The entries are coded in one stream, interleaved: entry e's gap (``gap_bits`` bits),
then its code (``code_bits`` bits). Each symbol is binarised MSB first through a bit tree:
node ← 1, then per bit node ← 2·node + bit; the node (1 .. 2^bits − 1) says which bits of the
symbol are known.

Contexts (per symbol; ``S`` = 0 for a gap, 1 for a code; c1, c2 the previous two codes; g the
previous entry's gap for a gap, this entry's gap for a code; col the column where the gap
starts, or the code's column):

    0  S                   order 0
    1  S, c1               the previous code
    2  S, c1, c2           the previous two codes (hashed)
    3  S, g                the gap
    4  S, col mod period   the kernel position (col·64 // ncols for a fully connected layer)
    5  S, col              the column (hashed when 2·ncols > 4096)
    6  S, c1, g            the previous code and the gap (hashed)

Each context value selects a block of 2^B slots (B = the wider of the two bit widths) in its
own table of 4096 blocks; the slot is the node. A slot holds an adaptive probability p (16
bits) of a 1 and a count n: p += (bit − p) / (n + 1.5), n ← min(n + 1, 255). The mixer takes
st_i = stretch(p_i) = ln(p_i / (1 − p_i)) (8 fractional bits, ±2047) and a bias input, one
weight vector per (S, node):

    p = squash(Σ_i w_i · st_i),   w_i += lr · st_i · (bit − p)   (online gradient step on the
                                                                   coding cost)

then an adaptive probability map (SSE) on (S, node, c1) refines p: 33 interpolated buckets
over stretch(p); the coded probability is (p + 3·sse) / 4, clamped to [1, 4095] / 4096.

Coder (32-bit, carry-less): the interval [x1, x2]; a bit with probability p of a 1 splits it at
xmid = x1 + ⌊(x2 − x1) / 4096⌋ · p: 1 keeps [x1, xmid], 0 keeps [xmid + 1, x2]; while the top
bytes of x1 and x2 agree, that byte is emitted. At the end x1's four bytes are emitted. The
decoder reads four bytes, then one per byte the encoder emitted, so a whole stream is consumed
exactly; it ends with x = x1. A stream is accepted only then: truncation, trailing bytes and
most corruption are refused (corrupt bytes that keep the end state decode to other symbols, as
in any entropy code without a checksum).

Encoder and decoder are one kernel (``cm_code``) with a flag: the model updates are the same
code on both sides. All arithmetic is integer (squash and stretch are tables derived from 33
integer points), so a stream decodes the same on every machine. Every read is bounded by the
stream's length; the work by the entry count (≤ the layer's size, checked by the caller).
"""

import numpy as np
from numba import njit

from .._jit import JIT

# round(4096 / (1 + e^{-(k − 16)/2})), k = 0 .. 32: the logistic at steps of 128/256
SQUASH_POINTS = (1, 2, 4, 6, 10, 17, 27, 45, 74, 120, 194, 311, 488, 747, 1102, 1546, 2048,
                 2550, 2994, 3349, 3608, 3785, 3902, 3976, 4022, 4051, 4069, 4079, 4086, 4090,
                 4092, 4094, 4095)
# The context model's version. Its constants (the contexts, tables, rates, squash points) define
# the stream: a change to any of them is a new version, and a file says which one wrote it.
MODEL_VERSION = 1
CONTEXTS = 7
TABLE_BLOCKS = 4096  # blocks of 2^B slots per context table
STATE_BYTES = 4

# cm_code's status codes (spelled as literals in the kernel)
OK = 0
PAST_END = -1
NOT_WHOLE = -3
FULL = -4
_REASONS = {PAST_END: "the stream ends before its symbols do (truncated)",
            NOT_WHOLE: "decoding does not end at the encoder's final state and the stream's last "
                       "byte (corrupt or trailing bytes)",
            FULL: "the encoder's output bound was exceeded (a bug)"}


def squash_table():
    """squash(d) for d = −2047 .. 2047 (index d + 2047): 4096 / (1 + e^{−d/256}), linear
    between the 33 points, as int32 in 0 .. 4095."""
    t = np.array(SQUASH_POINTS, dtype=np.int64)
    d = np.arange(-2047, 2048, dtype=np.int64) + 2048  # 1 .. 4095: 32 segments of 128
    k, w = d >> 7, d & 127
    return ((t[k] * (128 - w) + t[np.minimum(k + 1, 32)] * w + 64) >> 7).astype(np.int32)


def stretch_table(squash=None):
    """stretch(p) for p = 0 .. 4095: the smallest d with squash(d) ≥ p (2047 past the top), the
    inverse of ``squash_table``, int32."""
    squash = squash_table() if squash is None else squash
    d = np.searchsorted(squash, np.arange(4096), side="left") - 2047
    return np.minimum(d, 2047).astype(np.int32)


def table_shapes(code_bits, gap_bits):
    """(context tables, mixer weights, SSE) shapes for these bit widths."""
    block = 1 << max(code_bits, gap_bits)
    return (CONTEXTS, TABLE_BLOCKS * block), (2 * 8, CONTEXTS + 1), (2 * block * 256, 33)


def new_state(code_bits, gap_bits):
    """The model's initial state: zeroed tables (a zero slot is p = 1/2, n = 0; np.zeros
    allocates lazily, so untouched blocks cost nothing), the mixer's initial weights, the SSE
    map at the identity (its table holds offsets from ``sse_identity``)."""
    slots, mixer, sse = table_shapes(code_bits, gap_bits)
    weights = np.full(mixer, 1 << 14, dtype=np.int64)  # 0.25 each
    weights[:, -1] = 0
    return np.zeros(slots, np.int32), weights, np.zeros(sse, np.int32)


def sse_identity(squash=None):
    """The SSE buckets' starting values, 16-bit: squash at each bucket's stretch value (the map
    starts as the identity; its table holds each bucket's offset from this)."""
    squash = squash_table() if squash is None else squash
    buckets = np.clip((np.arange(33) - 16) * 128, -2047, 2047)
    return (squash[buckets + 2047].astype(np.int64) * 16).astype(np.int32)


@njit(**JIT)
def _hash(a, b, c):
    # a 31-bit hash of three non-negative ints (b and c taken mod 2^31)
    h = (a * 0x2F0B4A13 + 0x1234567) & 0x7FFFFFFF
    h = ((h ^ (b & 0x7FFFFFFF)) * 0x5BD1E995) & 0x7FFFFFFF
    h = ((h ^ (c & 0x7FFFFFFF)) * 0x3C6EF35F) & 0x7FFFFFFF
    return h ^ (h >> 15)


@njit(**JIT)
def cm_code(decoding, data, codes, gaps, count, code_bits, gap_bits, ncols, period, tables,
            weights, sse, stretch, squash, ident, rates, out):
    # Encode (decoding=False): codes, gaps: (count,) → the stream into out, → its length (−4:
    # out is full). Decode (decoding=True): data: (bytes,) → codes, gaps: (count,), → 0 or a
    # negative status (module docstring). tables, weights, sse: new_state() (updated in place);
    # stretch: (4096,); squash: (4095,); ident: (33,); rates: (256,) counter_rates(). Codes are
    # the model's symbols (ranks).
    B = max(code_bits, gap_bits)
    x1 = np.int64(0)
    x2 = np.int64(0xFFFFFFFF)
    x = np.int64(0)
    pos = 0
    size = data.shape[0]
    if decoding:
        if size < 4:
            return -1
        x = (np.int64(data[0]) << 24) | (np.int64(data[1]) << 16) | (np.int64(data[2]) << 8) \
            | np.int64(data[3])
        pos = 4
    st = np.zeros(8, np.int64)  # the inputs: 7 stretched probabilities and the bias
    idx = np.zeros(7, np.int64)
    base = np.zeros(7, np.int64)
    st[7] = 256
    c1 = np.int64(0)
    prev_gap = np.int64(0)
    nxt = np.int64(0)  # the position the next gap counts from
    for e in range(count):
        gap = np.int64(0)
        for S in range(2):
            if S == 0:
                bits, g, at = gap_bits, prev_gap, nxt
                sym = np.int64(0) if decoding else np.int64(gaps[e])
            else:
                bits, g, at = code_bits, gap, nxt + gap
                sym = np.int64(0) if decoding else np.int64(codes[e])
            col = at % ncols
            bucket = col % period if period > 1 else col * 64 // ncols
            # the contexts' blocks (module docstring's table)
            base[0] = S
            base[1] = S * 256 + c1
            base[2] = _hash(2 + S, at // ncols, 0) >> 19
            base[3] = S * 256 + g
            base[4] = S * 256 + bucket
            base[5] = S * 2048 + col if ncols <= 2048 else _hash(5 + S, col, 0) >> 19
            base[6] = _hash(7 + S, c1, g) >> 19
            for i in range(7):
                base[i] = (base[i] & 4095) << B
            node = np.int64(1)
            for b in range(bits - 1, -1, -1):
                # predict: p_i of each context, mixed: p = squash(Σ w·st) by the (S, depth) set
                msel = S * 8 + bits - 1 - b
                dot = weights[msel, 7] * st[7]
                for i in range(7):
                    k = base[i] + node
                    idx[i] = k
                    st[i] = stretch[((np.int64(tables[i, k]) & 0xFFFF) ^ 0x8000) >> 4]
                    dot += weights[msel, i] * st[i]
                pm = np.int64(squash[min(max(dot >> 16, -2047), 2047) + 2047])
                # SSE on (S, node, c1): between the two buckets around stretch(pm)
                srow = (((S << B) | node) << 8) | c1
                s = np.int64(stretch[pm]) + 2048  # 1 .. 4095
                lo = s >> 7
                w = s & 127
                v0 = np.int64(sse[srow, lo]) + ident[lo]
                v1 = np.int64(sse[srow, lo + 1]) + ident[lo + 1]
                p = (pm + 3 * ((v0 * (128 - w) + v1 * w) >> 11)) >> 2
                p = min(max(p, 1), 4095)
                # code the bit: 1 keeps [x1, xmid], 0 keeps [xmid + 1, x2]
                xmid = x1 + ((x2 - x1) >> 12) * p
                if decoding:
                    bit = np.int64(1) if x <= xmid else np.int64(0)
                else:
                    bit = (sym >> b) & 1
                if bit:
                    x2 = xmid
                else:
                    x1 = xmid + 1
                while ((x1 ^ x2) & 0xFF000000) == 0:  # the top bytes agree: shift one out
                    if decoding:
                        if pos >= size:
                            return -1
                        x = ((x << 8) & 0xFFFFFFFF) | np.int64(data[pos])
                    else:
                        if pos >= out.shape[0]:
                            return -4
                        out[pos] = x2 >> 24
                    pos += 1
                    x1 = (x1 << 8) & 0xFFFFFFFF
                    x2 = ((x2 << 8) & 0xFFFFFFFF) | 255
                # update: p_i += (bit − p_i)/(n + 1.5); w_i += st_i·(bit − pm)·8/2^13; SSE
                for i in range(7):
                    t = np.int64(tables[i, idx[i]])
                    p16 = (t & 0xFFFF) ^ 0x8000
                    n = t >> 16
                    rate = np.int64(rates[n])
                    if bit:
                        p16 += ((65535 - p16) * rate) >> 16
                    else:
                        p16 -= (p16 * rate) >> 16
                    if n < 255:
                        n += 1
                    tables[i, idx[i]] = (n << 16) | (p16 ^ 0x8000)
                err = ((bit << 12) - pm) * 8
                for i in range(8):
                    wi = weights[msel, i] + ((st[i] * err) >> 13)
                    weights[msel, i] = min(max(wi, -(1 << 22)), 1 << 22)
                sse[srow, lo] += (((bit << 16) - ident[lo] - sse[srow, lo]) * (128 - w)) >> 13
                sse[srow, lo + 1] += (((bit << 16) - ident[lo + 1] - sse[srow, lo + 1]) * w) >> 13
                node = 2 * node + bit
            sym = node - (1 << bits)
            if S == 0:
                gap = sym
                if decoding:
                    gaps[e] = sym
            else:
                c1 = sym
                if decoding:
                    codes[e] = sym
        prev_gap = gap
        nxt += gap + 1
    if decoding:
        if x != x1 or pos != size:
            return -3
        return 0
    for k in range(3, -1, -1):  # x1's four bytes end the stream
        if pos >= out.shape[0]:
            return -4
        out[pos] = (x1 >> (8 * k)) & 255
        pos += 1
    return pos


def counter_rates():
    """A counter's step after n updates, 2^16 / (n + 1.5) as ⌊2^17 / (2n + 3)⌋, n = 0 .. 255
    (a table: a division per context and bit cost more than the rest of the update)."""
    return (131072 // (2 * np.arange(256, dtype=np.int64) + 3)).astype(np.int32)


def value_ranks(centroids, code_bits):
    """code → its symbol in the model: the rank of its centroid's value (ties by code; codes
    past the centroids keep their place), so that the bit tree's branches split the values
    (sign and magnitude first) and neighbouring symbols are close weights. int64 (2^code_bits,)."""
    ranks = np.arange(1 << code_bits, dtype=np.int64)
    m = min(np.asarray(centroids).size, ranks.size)
    ranks[np.argsort(np.asarray(centroids)[:m], kind="stable")] = np.arange(m)
    return ranks


def _run(decoding, data, codes, gaps, count, code_bits, gap_bits, ncols, period, out):
    tables, weights, sse = new_state(code_bits, gap_bits)
    squash = squash_table()
    return cm_code(decoding, data, codes, gaps, count, code_bits, gap_bits, max(int(ncols), 1),
                   max(int(period), 1), tables, weights, sse, stretch_table(squash), squash,
                   sse_identity(squash), counter_rates(), out)


def encode(codes, gaps, code_bits, gap_bits, ncols, period=1, *, ranks=None):
    """Entries (codes < 2^code_bits, gaps < 2^gap_bits, one each) → the stream (uint8).
    ``ncols``: the row length (positions run over the flattened rows); ``period``: the kernel's
    spatial size (1: a fully connected layer); ``ranks``: the code → symbol map
    (``value_ranks``; default: the codes themselves)."""
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    gaps = np.ascontiguousarray(gaps, dtype=np.int64)
    if codes.shape != gaps.shape or codes.ndim != 1:
        raise ValueError("cm: codes and gaps must be two 1-D arrays of the same length")
    for label, a, bits in (("codes", codes, code_bits), ("gaps", gaps, gap_bits)):
        if not 1 <= bits <= 8:
            raise ValueError(f"cm: {label} bits must be 1..8, got {bits}")
        if a.size and (a.min() < 0 or a.max() >= 1 << bits):
            raise ValueError(f"cm: {label} must lie in [0, {1 << bits})")
    if ranks is not None:
        codes = _check_ranks(ranks, code_bits)[codes]
    # a bit costs at most 12 bits (p ≥ 1/4096) plus the split's rounding
    out = np.empty(2 * codes.size * (code_bits + gap_bits) + 16, np.uint8)
    n = _run(False, out[:0], codes.astype(np.uint8), gaps.astype(np.uint8), codes.size,
             code_bits, gap_bits, ncols, period, out)
    if n < 0:
        raise ValueError(f"cm: {_REASONS[n]}")
    return out[:n].copy()


def decode(data, count, code_bits, gap_bits, ncols, period=1, *, ranks=None, name="cm stream"):
    """(codes, gaps) (uint8, ``count`` each) of a stream; one-line ValueError naming ``name`` if
    it is not whole. The caller bounded ``count`` (the work and the allocation) and checked the
    bit widths; ``ranks`` as given to ``encode``."""
    codes, gaps = np.empty(count, np.uint8), np.empty(count, np.uint8)
    status = _run(True, np.ascontiguousarray(data, dtype=np.uint8), codes, gaps, count,
                  code_bits, gap_bits, ncols, period, codes[:0])
    if status != OK:
        raise ValueError(f"{name}: {_REASONS[status]}")
    if ranks is not None:
        codes = np.argsort(_check_ranks(ranks, code_bits)).astype(np.uint8)[codes]
    return codes, gaps


def _check_ranks(ranks, code_bits):
    ranks = np.asarray(ranks, dtype=np.int64)
    if ranks.shape != (1 << code_bits,) or not np.array_equal(np.sort(ranks),
                                                              np.arange(1 << code_bits)):
        raise ValueError(f"cm: ranks must be a permutation of 0 .. {(1 << code_bits) - 1}")
    return ranks
