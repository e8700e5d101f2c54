"""engine/formats/huffman.py: round trips, optimality of the code lengths, canonical codes, sizes,
and corrupt or truncated streams, against textbook references written here: heapq Huffman, a
brute-force length-limited optimum, RFC 1951's canonical code assignment and a NumPy decoder.

``reference_decode_block`` is the independent decoder: it reads the stream with
``np.unpackbits``, finds the code starting at every bit position at once, then follows the
chain of code starts from the block's first bit by pointer doubling: no per-symbol loop.
"""

import heapq
import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robustcnn.engine.formats import huffman as hf
from robustcnn.engine.formats.huffman import (MAX_LENGTH, HuffmanStream, canonical_codes,
                                               code_lengths, decode, decode_block_into,
                                               decode_tables, encode, entropy_bits, validate)

FAST = settings(max_examples=60, deadline=None, derandomize=True)

# ---------------------------------------------------------------------------------------------
# References


def huffman_cost_ref(counts):
    """Σ count·length of a Huffman code: the sum of all merged weights (heapq, unlimited)."""
    heap = [int(c) for c in counts if c > 0]
    if len(heap) == 1:
        return heap[0]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


def limited_cost_bruteforce(counts, limit):
    """The least Σ count·length over all length vectors in 1..limit with Kraft sum ≤ 1."""
    counts = np.asarray([c for c in counts if c > 0], dtype=np.int64)
    combos = np.array(list(itertools.product(range(1, limit + 1), repeat=counts.size)))
    ok = (2.0 ** -combos).sum(axis=1) <= 1
    return int((combos[ok] * counts).sum(axis=1).min())


def reference_codes(lengths):
    """{symbol: (length, code)}, assigned as in RFC 1951 §3.2.2 (bl_count, next_code)."""
    lengths = [int(l) for l in lengths]
    bl_count = [0] * (MAX_LENGTH + 2)
    for l in lengths:
        if l:
            bl_count[l] += 1
    next_code, code = [0] * (MAX_LENGTH + 2), 0
    for bits in range(1, MAX_LENGTH + 1):
        code = (code + bl_count[bits - 1]) << 1
        next_code[bits] = code
    codes = {}
    for s, l in enumerate(lengths):
        if l:
            codes[s] = (l, next_code[l])
            next_code[l] += 1
    return codes


def reference_decode_block(bits, nbits, lengths, bit_start, count):
    """Decode ``count`` symbols from bit ``bit_start`` in NumPy → (symbols int64, end bit).

    Raises ValueError if a code matches nothing or runs past ``nbits``. Assumes the arguments
    are in range (the kernel's own argument checks are tested separately).
    """
    codes = reference_codes(lengths)
    if count == 0:
        return np.zeros(0, dtype=np.int64), bit_start
    if not codes:
        raise ValueError("no codes")
    longest = max(l for l, _ in codes.values())
    m = min(nbits - bit_start, count * longest)  # the bits the block's codes can reach
    first = bit_start >> 3
    stream = np.unpackbits(np.asarray(bits[first:(bit_start + m + 7) >> 3], dtype=np.uint8))
    stream = stream[bit_start - 8 * first:][:m]
    seg = np.concatenate([stream, np.zeros(longest, dtype=np.uint8)]).astype(np.uint64)
    window = np.zeros(m, dtype=np.uint64)  # the next `longest` bits at every position
    for j in range(longest):
        window = (window << np.uint64(1)) | seg[j:j + m]
    sym_at = np.full(m + 2, -1, dtype=np.int64)
    len_at = np.zeros(m + 2, dtype=np.int64)
    for l in range(1, longest + 1):
        of_l = sorted((c, s) for s, (ll, c) in codes.items() if ll == l)
        if not of_l:
            continue
        code_l = np.array([c for c, _ in of_l], dtype=np.uint64)
        sym_l = np.array([s for _, s in of_l], dtype=np.int64)
        prefix = window >> np.uint64(longest - l)
        k = np.minimum(np.searchsorted(code_l, prefix), code_l.size - 1)
        hit = (code_l[k] == prefix) & (sym_at[:m] < 0)
        sym_at[:m][hit] = sym_l[k[hit]]
        len_at[:m][hit] = l
    # next[p]: where the code after the one at p starts; m + 1 is "no valid code here"
    nxt = np.arange(m + 2, dtype=np.int64) + len_at
    nxt[(sym_at < 0) | (nxt > m)] = m + 1
    positions, jump = np.zeros(1, dtype=np.int64), nxt
    while positions.size < count:
        positions = np.concatenate([positions, jump[positions]])
        jump = jump[jump]
    positions = positions[:count]
    if (positions > m).any() or sym_at[positions[-1]] < 0 or nxt[positions[-1]] > m:
        raise ValueError("invalid or truncated")
    return sym_at[positions], bit_start + int(nxt[positions[-1]])


# ---------------------------------------------------------------------------------------------
# Streams to test on


def fibonacci(k):
    f = [1, 1]
    while len(f) < k:
        f.append(f[-1] + f[-2])
    return np.array(f[:k], dtype=np.int64)


def distribution(kind, alphabet, rng):
    k = np.arange(alphabet, dtype=np.float64)
    if kind == "uniform":
        p = np.ones(alphabet)
    elif kind == "geometric":
        p = rng.choice([0.5, 0.8, 0.97]) ** k
    elif kind == "dominant":  # one symbol at 99.99 %
        p = np.full(alphabet, 1e-4 / max(alphabet - 1, 1))
        p[rng.integers(alphabet)] = 0.9999 if alphabet > 1 else 1.0
    else:  # Fibonacci-like: probabilities ∝ φ^−k, the deepest Huffman trees
        p = 0.618 ** k
    return p / p.sum()


@st.composite
def streams(draw, max_n=1500):
    """(symbols, block_starts, alphabet_size): random distribution, length and blocks."""
    alphabet = draw(st.sampled_from([1, 2, 3, 32, 256]) | st.integers(1, 600))
    kind = draw(st.sampled_from(["uniform", "geometric", "dominant", "fibonacci"]))
    n = draw(st.integers(0, max_n))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    symbols = rng.choice(alphabet, size=n, p=distribution(kind, alphabet, rng))
    cuts = np.sort(rng.integers(0, n + 1, size=draw(st.integers(0, 12))))  # duplicates: empty blocks
    dtypes = [np.int64, np.int32, np.uint16] + ([np.uint8] if alphabet <= 256 else [])
    dtype = draw(st.sampled_from(dtypes))
    return symbols.astype(dtype), np.concatenate([[0], cuts, [n]]), alphabet


def kraft(lengths):
    l = np.asarray(lengths, dtype=np.int64)
    return float((2.0 ** -l[l > 0]).sum())


def check_round_trip(symbols, starts=None, alphabet=None, **kw):
    """encode → decode equals; every block alone through the kernel and the NumPy reference."""
    s = encode(symbols, starts, alphabet, **kw)
    validate(s)
    out = decode(s)
    assert out.shape == (len(symbols),)
    assert out.dtype == (np.uint8 if s.alphabet_size <= 256 else np.uint16)
    np.testing.assert_array_equal(out, symbols)
    tables = decode_tables(s.lengths)
    for b in range(s.nblocks):
        s0, s1 = s.block_symbol_starts[b], s.block_symbol_starts[b + 1]
        p0, p1 = s.block_bit_starts[b], s.block_bit_starts[b + 1]
        buf = np.full(s1 - s0 + 3, 7777, dtype=np.int32)
        end = decode_block_into(s.bits, s.nbits, *tables, p0, s1 - s0, buf)
        assert end == p1, f"block {b}: kernel ended at {end}, next block starts at {p1}"
        np.testing.assert_array_equal(buf[:s1 - s0], symbols[s0:s1])
        assert (buf[s1 - s0:] == 7777).all(), "the kernel wrote past the block"
        ref, ref_end = reference_decode_block(s.bits, s.nbits, s.lengths, p0, s1 - s0)
        np.testing.assert_array_equal(ref, symbols[s0:s1])
        assert ref_end == p1
    return s


@pytest.fixture(scope="module", autouse=True)
def warm_up():
    """Compile the kernels once, before hypothesis times anything."""
    check_round_trip(np.array([0, 1, 1, 2], dtype=np.int64), [0, 2, 4])


# ---------------------------------------------------------------------------------------------
# Round trips


@FAST
@given(streams())
def test_round_trip(case):
    symbols, starts, alphabet = case
    check_round_trip(symbols, starts, alphabet)


def test_round_trip_special_streams(rng):
    check_round_trip(np.zeros(0, dtype=np.int64))  # empty, alphabet 0, one empty block
    check_round_trip(np.zeros(0, dtype=np.int64), [0, 0, 0], 256)  # empty blocks
    s = check_round_trip(np.zeros(0, dtype=np.int64), [0])  # no blocks at all
    assert s.nblocks == 0 and s.nbits == 0
    s = check_round_trip(np.array([5]), None, 8)  # one symbol once
    assert s.lengths[5] == 1 and s.nbits == 1
    check_round_trip(np.full(1000, 7), [0, 10, 10, 999, 1000], 8)  # one-symbol alphabet
    check_round_trip(rng.permutation(np.repeat(np.arange(256), 3)).astype(np.uint8))  # all 256
    dominant = np.where(rng.random(20000) < 0.9999, 3, rng.integers(0, 256, 20000))
    s = check_round_trip(dominant, np.arange(0, 20001, 100), 256)
    assert s.lengths[3] == 1
    big = rng.integers(0, 4000, 5000)  # uint16 output
    check_round_trip(big, [0, 2500, 5000], 4000)


def test_round_trip_long_codes(rng):
    """Fibonacci counts: codes of 1..24 bits, far beyond the primary table's."""
    counts = fibonacci(25)
    symbols = rng.permutation(np.repeat(np.arange(25), counts))
    s = check_round_trip(symbols, np.linspace(0, symbols.size, 40).astype(np.int64))
    assert s.lengths.max() == 24 > hf.PRIMARY_BITS


def test_round_trip_at_the_length_limit(rng):
    """A code whose longest codes have exactly MAX_LENGTH bits (from Fibonacci counts too large
    to sample), given through ``lengths``; every symbol, the rarest included, occurs."""
    lengths = code_lengths(fibonacci(45))
    assert lengths.max() == MAX_LENGTH
    symbols = rng.permutation(np.concatenate([np.arange(45), rng.integers(40, 45, 500)]))
    s = check_round_trip(symbols, [0, 100, 101, 400, symbols.size], lengths=lengths)
    assert s.nbits == int(lengths[symbols].astype(np.int64).sum())


# ---------------------------------------------------------------------------------------------
# Code lengths and canonical codes

counts_arrays = st.lists(st.integers(0, 10 ** 6), min_size=1, max_size=300).map(np.array)


@FAST
@given(counts_arrays)
def test_code_lengths_are_optimal(counts):
    lengths = code_lengths(counts)
    used = counts > 0
    assert lengths.dtype == np.uint8 and lengths.shape == counts.shape
    assert ((lengths > 0) == used).all()
    if used.sum() == 0:
        return
    cost = int((counts * lengths.astype(np.int64)).sum())
    assert cost == huffman_cost_ref(counts)
    total, H = counts.sum(), entropy_bits(counts)
    if used.sum() >= 2:
        assert kraft(lengths) == 1.0
        assert H - 1e-9 * total <= cost < H + total  # within 1 bit/symbol of the entropy
    else:
        assert lengths[used][0] == 1


@FAST
@given(st.lists(st.integers(1, 1000), min_size=2, max_size=6), st.data())
def test_limited_code_lengths_are_optimal(counts, data):
    counts = np.array(counts)
    limit = data.draw(st.integers(int(np.ceil(np.log2(counts.size))), 5))
    lengths = code_lengths(counts, limit)
    assert lengths.max() <= limit and kraft(lengths) == 1.0
    assert int((counts * lengths.astype(np.int64)).sum()) == limited_cost_bruteforce(counts, limit)


@pytest.mark.parametrize("limit", [6, 8, 12, 20, MAX_LENGTH])
def test_limit_hit_by_fibonacci_counts(limit):
    """Unlimited Huffman gives Fibonacci counts lengths 1..n−1; the limit caps them. The average
    stays below H + 1 − log2(1 − n·2^−limit) (the mixture bound in ``code_lengths``)."""
    counts = fibonacci(45)
    lengths = code_lengths(counts, limit)
    assert lengths.max() == limit and kraft(lengths) == 1.0
    cost = int((counts * lengths.astype(np.int64)).sum())
    assert cost >= huffman_cost_ref(counts)
    total, H = counts.sum(), entropy_bits(counts)
    assert cost / total < (H / total + 1 - np.log2(1 - counts.size * 2.0 ** -limit))


@FAST
@given(counts_arrays)
def test_canonical_codes_are_prefix_free_and_ordered(counts):
    lengths = code_lengths(counts)
    codes = canonical_codes(lengths)
    assert codes.dtype == np.uint32
    ref = reference_codes(lengths)
    assert {s: (int(lengths[s]), int(codes[s])) for s in np.flatnonzero(lengths)} == ref
    order = sorted(ref, key=lambda s: (lengths[s], s))
    lo = [int(codes[s]) << (MAX_LENGTH - int(lengths[s])) for s in order]
    hi = [(int(codes[s]) + 1) << (MAX_LENGTH - int(lengths[s])) for s in order]
    assert all(int(codes[s]) < 1 << int(lengths[s]) for s in order)
    # left-justified ranges in canonical order: increasing and disjoint, i.e. prefix-free
    assert all(h <= l for h, l in zip(hi, lo[1:]))
    if len(order) >= 2:
        assert lo[0] == 0 and hi[-1] == 1 << MAX_LENGTH  # complete: Kraft sum 1


def test_canonical_codes_small_example():
    # RFC 1951's example: lengths (3, 3, 3, 3, 3, 2, 4, 4) for A..H
    codes = canonical_codes(np.array([3, 3, 3, 3, 3, 2, 4, 4]))
    assert codes.tolist() == [0b010, 0b011, 0b100, 0b101, 0b110, 0b00, 0b1110, 0b1111]


def test_entropy_bits():
    assert entropy_bits([1, 1, 1, 1]) == pytest.approx(8.0)
    assert entropy_bits([0, 5, 0]) == 0.0
    assert entropy_bits([]) == 0.0
    assert entropy_bits([1, 3]) == pytest.approx(1 * 2 + 3 * np.log2(4 / 3))


# ---------------------------------------------------------------------------------------------
# Sizes


def test_nbytes_is_exact(rng):
    symbols = rng.integers(0, 2, 1001)  # two symbols: one bit each
    s = encode(symbols, np.arange(0, 1002, 91).tolist() + [1001])
    assert s.nbits == 1001
    assert s.nbytes() == {"bits": 126, "lengths": 2, "block_symbol_starts": 13 * 2,
                          "block_bit_starts": 13 * 2, "header": hf.HEADER_BYTES}
    assert s.stored_bytes() == 126 + 2 + 26 + 26 + hf.HEADER_BYTES
    assert encode(rng.integers(0, 2, 65535)).nbytes()["block_bit_starts"] == 2 * 2
    assert encode(rng.integers(0, 2, 65536)).nbytes()["block_bit_starts"] == 2 * 4
    assert hf.table_dtype(2 ** 32 - 1) == np.uint32 and hf.table_dtype(2 ** 32) == np.uint64


# ---------------------------------------------------------------------------------------------
# Invalid arguments and corrupt streams


@pytest.mark.parametrize("args, kw, error, match", [
    (([-1, 2],), {}, ValueError, "non-negative"),
    (([0, 5], None, 4), {}, ValueError, "outside the alphabet"),
    (([0.5, 1.0],), {}, TypeError, "integers"),
    (([[0, 1]],), {}, ValueError, "1 axis"),
    (([0, 1, 2], [1, 3]), {}, ValueError, "from 0"),
    (([0, 1, 2], [0, 2]), {}, ValueError, "from 0"),
    (([0, 1, 2], [0, 2, 1, 3]), {}, ValueError, "never decrease"),
    (([0, 1], None, 1 << 17), {}, ValueError, "alphabet_size"),
    (([0, 1],), {"max_length": 33}, ValueError, "max_length"),
    (([0, 1, 2, 3, 4],), {"max_length": 2}, ValueError, "cannot have distinct codes"),
    (([0, 2],), {"lengths": [1, 1, 0]}, ValueError, "symbol 2 occurs"),
    (([0, 1],), {"lengths": [1, 2, 0]}, ValueError, "incomplete"),
    (([0, 1],), {"lengths": [1, 1, 1]}, ValueError, "over-subscribed"),
])
def test_encode_rejects(args, kw, error, match):
    with pytest.raises(error, match=match):
        encode(*args, **kw)


def corrupt(s, **changes):
    return HuffmanStream(**{**s.__dict__, **changes})


@pytest.fixture
def stream(rng):
    """3000-odd skewed symbols in 10 blocks, ending in a partial byte (to test the padding)."""
    symbols = rng.choice(256, size=3010, p=distribution("geometric", 256, rng))
    for n in range(3000, 3010):
        s = encode(symbols[:n], np.linspace(0, n, 11).astype(np.int64), 256)
        if s.nbits % 8:
            return s


def structural_corruptions(s):
    """(description, corrupted stream, message fragment) for everything validate must catch."""
    l = s.lengths.copy()
    used = np.flatnonzero(l)
    over = l.copy()
    over[used[-1]] -= 1  # shorter code: Kraft sum > 1
    long_ = l.copy()
    long_[used[0]] = 40
    incomplete = l.copy()
    incomplete[used[0]] += 1
    sym = s.block_symbol_starts.copy()
    sym[3], sym[4] = sym[4], sym[3]
    pos = s.block_bit_starts.copy()
    pos[5] = pos[6] + 1
    pos_not_last = s.block_bit_starts.copy()
    pos_not_last[-1] -= 1
    short = s.block_bit_starts.copy()
    short[4] = short[3]  # block 3: no bits for its symbols
    pad = s.bits.copy()
    pad[-1] |= 1
    return [
        ("over-subscribed lengths", corrupt(s, lengths=over), "over-subscribed"),
        ("a length above the limit", corrupt(s, lengths=long_), "0..32"),
        ("incomplete lengths", corrupt(s, lengths=incomplete), "incomplete"),
        ("lengths of another alphabet", corrupt(s, lengths=l[:-1]), "code lengths for an alphabet"),
        ("alphabet too large", corrupt(s, alphabet_size=1 << 20), "alphabet_size"),
        ("lengths of the wrong dtype", corrupt(s, lengths=l.astype(np.int32)), "uint8"),
        ("bits of the wrong dtype", corrupt(s, bits=s.bits.astype(np.int16)), "uint8"),
        ("a list for bits", corrupt(s, bits=s.bits.tolist()), "numpy array"),
        ("symbol table decreasing", corrupt(s, block_symbol_starts=sym), "decreases"),
        ("bit table decreasing", corrupt(s, block_bit_starts=pos), "decreases"),
        ("bit table not ending at nbits", corrupt(s, block_bit_starts=pos_not_last),
         "expected nbits"),
        ("tables of different sizes", corrupt(s, block_bit_starts=s.block_bit_starts[:-1]),
         "entries"),
        ("symbol table not from 0", corrupt(s, block_symbol_starts=s.block_symbol_starts + 1),
         "start at 0"),
        ("a block too short for its symbols", corrupt(s, block_bit_starts=short), "spans 0 bits"),
        ("nbits beyond bits", corrupt(s, nbits=s.nbits + 8), "needs"),
        ("negative nbits", corrupt(s, nbits=-1), "non-negative"),
        ("bits cut short", corrupt(s, bits=s.bits[:-1]), "needs"),
        ("non-zero padding", corrupt(s, bits=pad), "padding"),
    ]


def test_validate_rejects_structural_corruption(stream):
    for what, bad, match in structural_corruptions(stream):
        with pytest.raises(ValueError, match=match):
            decode(bad)
        with pytest.raises(ValueError, match=match):
            validate(bad, name=what)


def test_errors_name_the_block():
    # One symbol: code "0"; a 1 in block 2 matches no code.
    s = encode(np.zeros(30, dtype=np.int64), [0, 10, 20, 30])
    bits = s.bits.copy()
    bits[2] |= 0x80  # bit 16, in block 1 (bits 10..20)
    with pytest.raises(ValueError, match=r"mine: block 1 \(symbols 10..20, bits 10..20 of 30\): "
                                         r"a bit pattern matches no code"):
        decode(corrupt(s, bits=bits), name="mine")
    # Lengths (1, 2, 2): block 0 = [1, 0] is "10 0"; flipping bit 0 decodes "0 0" in 2 bits,
    # short of where block 1 starts.
    s = encode(np.array([1, 0, 0, 0, 0, 2, 2, 2, 2, 1]), [0, 2, 10], lengths=[1, 2, 2])
    bits = s.bits.copy()
    bits[0] ^= 0x80
    with pytest.raises(ValueError, match="block 0 .*end at bit 2, not where the next block starts"):
        decode(corrupt(s, bits=bits))


def test_corrupt_lengths(stream, rng):
    """Random code lengths: validate rejects almost all (Kraft sum ≠ 1); any that pass decode to
    a ValueError or the right number of symbols. Lengths permuted among the used symbols only
    relabel them (canonical code words depend on the multiset of lengths): undetectable."""
    raised = 0
    for _ in range(50):
        lengths = stream.lengths.copy()
        lengths[rng.integers(0, lengths.size, rng.integers(1, 4))] = rng.integers(0, 40, 3)[0]
        try:
            out = decode(corrupt(stream, lengths=lengths))
            assert out.shape == (stream.nsymbols,)
        except ValueError:
            raised += 1
    assert raised
    # A complete code of another shape, (1, 2, 3, 3) → (2, 2, 2, 2): the block spans give it away.
    s = encode(np.repeat(np.arange(4), [8, 4, 2, 2]), [0, 5, 9, 16])
    assert s.lengths.tolist() == [1, 2, 3, 3]
    with pytest.raises(ValueError, match="block 0 spans"):
        decode(corrupt(s, lengths=np.full(4, 2, dtype=np.uint8)))


def test_truncated_streams_are_rejected(stream):
    s = stream
    for cut in (1, s.nbits // 2, s.nbits - 1):
        nbits = s.nbits - cut
        bits = s.bits[:(nbits + 7) // 8].copy()
        if nbits % 8:
            bits[-1] &= 0xFF << (8 - nbits % 8) & 0xFF
        with pytest.raises(ValueError):  # the bit table still ends at the old nbits
            decode(corrupt(s, bits=bits, nbits=nbits))
        pos = np.minimum(s.block_bit_starts, nbits)  # tables cut to match: a block runs short
        with pytest.raises(ValueError):
            decode(corrupt(s, bits=bits, nbits=nbits, block_bit_starts=pos))
    tables = decode_tables(s.lengths)
    out = np.empty(s.nsymbols, dtype=np.uint8)
    assert decode_block_into(s.bits, s.nbits - 5, *tables, 0, s.nsymbols, out) == hf.PAST_END
    assert decode_block_into(s.bits[:10], s.nbits, *tables, 0, s.nsymbols, out) == hf.PAST_END


@FAST
@given(streams(max_n=400), st.lists(st.integers(0, 10 ** 6), min_size=1, max_size=3))
def test_corrupt_bits(case, flips):
    """Flipped bits: decode raises ValueError or returns the right length, and every block decodes
    the same in the kernel and in the NumPy reference (same symbols, or both fail)."""
    symbols, starts, alphabet = case
    s = encode(symbols, starts, alphabet)
    if s.nbits == 0:
        return
    bits = s.bits.copy()
    for f in flips:
        f %= s.nbits
        bits[f >> 3] ^= 0x80 >> (f & 7)
    bad = corrupt(s, bits=bits)
    try:
        out = decode(bad)
        assert out.shape == symbols.shape
    except ValueError as e:
        assert "block" in str(e)
    tables = decode_tables(s.lengths)
    for b in range(s.nblocks):
        s0, s1 = s.block_symbol_starts[b], s.block_symbol_starts[b + 1]
        p0 = s.block_bit_starts[b]
        out = np.empty(s1 - s0, dtype=np.int64)
        end = decode_block_into(bits, s.nbits, *tables, p0, s1 - s0, out)
        try:
            ref, ref_end = reference_decode_block(bits, s.nbits, s.lengths, p0, s1 - s0)
        except ValueError:
            assert end in (hf.INVALID_CODE, hf.PAST_END)
            continue
        assert end == ref_end
        np.testing.assert_array_equal(out, ref)


@FAST
@given(counts_arrays, st.binary(max_size=40), st.integers(-20, 400), st.integers(-20, 400),
       st.integers(-3, 120), st.integers(0, 100))
def test_decode_block_into_on_garbage(counts, raw, nbits, bit_start, n, out_size):
    """Any bytes, any nbits, start and count: an error code or a result the reference agrees
    with; never a crash (the bounds-checked rerun below catches out-of-bounds reads)."""
    lengths = code_lengths(counts)
    bits = np.frombuffer(raw, dtype=np.uint8)
    out = np.full(out_size, -1, dtype=np.int64)
    end = decode_block_into(bits, nbits, *decode_tables(lengths), bit_start, n, out)
    limit = min(nbits, 8 * bits.size)
    if bit_start < 0 or bit_start > limit or n < 0 or n > out_size:
        assert end == hf.BAD_ARGUMENTS
        return
    try:
        ref, ref_end = reference_decode_block(bits, limit, lengths, bit_start, n)
    except ValueError:
        assert end in (hf.INVALID_CODE, hf.PAST_END)
        return
    assert end == ref_end
    np.testing.assert_array_equal(out[:n], ref)


def test_decode_block_into_with_empty_and_odd_tables():
    out = np.zeros(8, dtype=np.int64)
    empty = decode_tables(np.zeros(3, dtype=np.uint8))  # no codes at all
    assert decode_block_into(np.zeros(4, np.uint8), 32, *empty, 0, 0, out) == 0
    assert decode_block_into(np.zeros(4, np.uint8), 32, *empty, 0, 1, out) == hf.INVALID_CODE
    lone = decode_tables(np.array([0, 1], dtype=np.uint8))  # code "0" only
    assert decode_block_into(np.array([0x0F], np.uint8), 8, *lone, 0, 4, out) == 4
    assert decode_block_into(np.array([0x0F], np.uint8), 8, *lone, 0, 5, out) == hf.INVALID_CODE
    assert out[:4].tolist() == [1, 1, 1, 1]
    assert decode_block_into(np.zeros(4, np.uint8), 32, *lone, 0, 9, out) == hf.BAD_ARGUMENTS
    wrong = decode_tables(np.array([1, 1], dtype=np.uint8))._replace(primary_bits=3)
    assert decode_block_into(np.zeros(4, np.uint8), 32, *wrong, 0, 1, out) == hf.BAD_ARGUMENTS


# ---------------------------------------------------------------------------------------------
# The same corrupt-input tests with Numba's bounds checks on, compiled from scratch

_BOUNDSCHECKED = textwrap.dedent("""
    import sys
    import numba
    import numpy as np
    import pytest

    assert numba.config.BOUNDSCHECK, "NUMBA_BOUNDSCHECK is not in effect"

    @numba.njit
    def canary(a, i):
        return a[i]

    try:
        canary(np.zeros(3), 5)
    except IndexError:
        pass
    else:
        sys.exit("bounds checking is off: an out-of-bounds read did not raise")
    sys.exit(pytest.main([sys.argv[1], "-q", "-p", "no:cacheprovider", "-m", "not slow", "-k",
                          "round_trip or corrupt or truncated or garbage or odd_tables"]))
""")


@pytest.mark.slow
def test_kernels_stay_in_bounds_with_numba_boundscheck(tmp_path):
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    result = subprocess.run([sys.executable, "-c", _BOUNDSCHECKED, __file__], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert " passed" in result.stdout and "IndexError" not in result.stdout
