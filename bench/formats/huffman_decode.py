"""Huffman decode throughput: our decoder (``engine.formats.huffman.decode``, and its kernel
alone) against a NumPy decoder, on a skewed stream and on the Deep Compression SqueezeNet's
codes and gaps, in MB/s of float32 weights."""

import numpy as np

from ..common import selected
from .contenders import NUMPY_HUFFMAN, Contender, FormatCase


def skewed_symbols(n, alphabet=256, decay=0.97, seed=0):
    """``n`` symbols with P(s) ∝ decay**s (the geometric stream huffman.py's tuning used)."""
    p = decay ** np.arange(alphabet)
    return np.random.default_rng(seed).choice(alphabet, size=n, p=p / p.sum()).astype(np.uint8)


def numpy_huffman_decode(stream):
    """All symbols of a HuffmanStream, decoded in NumPy: the peer of ``huffman.decode``.

    Vectorised across blocks: step i decodes symbol i of every block that has one, so the Python
    loop runs as many times as the longest block has symbols, not once per symbol. A step reads
    40 bits at each block's bit position (5 byte gathers), looks the next ``primary_bits`` up in
    the primary table and resolves longer codes by the canonical first-code-per-length test,
    the kernel's algorithm. The bit window and the canonical test follow
    ``reference_decode_block`` in tests/engine/formats/test_huffman.py; that decoder's pointer
    doubling over every bit position, tried here as the peer, decoded the 10 M-symbol stream
    below at ~4 M symbols/s against ~19 M for this one, so this is the fairer peer. No
    validation: the streams are the bench's own.
    """
    from ...engine.formats.huffman import decode_tables

    primary, primary_bits, canonical, sorted_symbols = decode_tables(stream.lengths)
    first, per_length, offset = canonical
    longest = int(np.flatnonzero(per_length).max(initial=0))
    padded = np.concatenate([stream.bits, np.zeros(5, dtype=np.uint8)])
    starts = stream.block_symbol_starts
    counts = np.diff(starts)
    order = np.argsort(-counts, kind="stable")  # longest blocks first: the active ones a prefix
    pos = stream.block_bit_starts[:-1][order].astype(np.int64)
    first_symbol = starts[:-1][order]
    steps = int(counts.max(initial=0))
    active = np.searchsorted(-counts[order], -np.arange(steps), side="left")
    out = np.empty(stream.nsymbols, dtype=np.uint8 if stream.alphabet_size <= 256 else np.uint16)
    for i in range(steps):
        p = pos[:active[i]]  # a view: advancing p advances pos
        byte = p >> 3
        window = padded[byte].astype(np.uint64)
        for k in range(1, 5):
            window = (window << 8) | padded[byte + k]
        window <<= (p & 7).astype(np.uint64) + 24  # bit p at bit 63
        entry = primary[window >> (64 - primary_bits)]
        length = entry & 0xFF
        symbol = entry >> 8
        slow = np.flatnonzero(length == 0)  # codes longer than primary_bits
        for l in range(primary_bits + 1, longest + 1):
            if slow.size == 0:
                break
            d = (window[slow] >> (64 - l)).astype(np.int64) - first[l]
            hit = (d >= 0) & (d < per_length[l])
            symbol[slow[hit]] = sorted_symbols[offset[l] + d[hit]]
            length[slow[hit]] = l
            slow = slow[~hit]
        out[first_symbol[:active[i]] + i] = symbol
        p += length
    return out


def _huffman_kernel(stream):
    """decode_blocks alone on prebuilt tables and buffers (what ``huffman.decode`` adds:
    ``validate``, ``decode_tables``, the output buffer and the end-of-block check)."""
    from ...engine.formats.huffman import decode_blocks, decode_tables

    tables = decode_tables(stream.lengths)
    out = np.empty(stream.nsymbols, dtype=np.uint8 if stream.alphabet_size <= 256 else np.uint16)
    ends = np.empty(stream.nblocks, dtype=np.int64)
    nbits = np.int64(stream.nbits)

    def run():
        decode_blocks(stream.bits, nbits, *tables, stream.block_bit_starts,
                      stream.block_symbol_starts, out, ends)
        return out

    return run


def huffman_decode_case(name, streams, symbols, weights, *, target=None):
    """Decode ``streams`` (whose symbols are ``symbols``) with ours and NumPy; ``weights`` is the
    number of float32 weights they decode to (for MB/s)."""
    from ...engine.formats import huffman

    kernels = [_huffman_kernel(s) for s in streams]
    expected = lambda: tuple(symbols)  # noqa: E731
    contenders = [
        Contender("robustcnn-huffman", lambda: tuple(huffman.decode(s) for s in streams),
                  expected),
        Contender("robustcnn-huffman-kernel", lambda: tuple(k() for k in kernels), expected),
        Contender(NUMPY_HUFFMAN, lambda: tuple(numpy_huffman_decode(s) for s in streams),
                  expected),
    ]
    targets = (("robustcnn-huffman", None, target),) if target else ()
    return FormatCase(name, contenders, (NUMPY_HUFFMAN,), weights_decoded=weights,
                      targets=targets)


def huffman_decode_cases(symbols=10_000_000, block=4096, *, match=None):
    """Our Huffman decoder against NumPy's on a skewed 256-symbol stream cut into rows of
    ``block`` symbols, and on the real SqueezeNet codes and gaps (one block per row)."""
    from ...engine.formats import HuffmanCodebookWeight, huffman
    from ...models.squeezenet_dc import load_deep_compression_arrays, sparse_codebook_weight

    cases = []
    name = f"huffman decode skewed-256 {symbols / 1e6:g}M symbols, {block}-symbol blocks"
    if selected(name, match):
        s = skewed_symbols(symbols)
        starts = np.unique(np.append(np.arange(0, symbols, block), symbols))
        stream = huffman.encode(s, starts, 256)
        cases.append(huffman_decode_case(name, [stream], [s], symbols, target=200))
    name = "huffman decode squeezenet codes+gaps, 26 layers, a block per row"
    if selected(name, match):
        streams, symbols_ = [], []
        for layer in load_deep_compression_arrays().values():
            w = HuffmanCodebookWeight.from_sparse_codebook(sparse_codebook_weight(layer))
            streams += [w.codes, w.gaps]
            symbols_ += [layer.codes, layer.gaps]
        entries = sum(s.size for s in symbols_) // 2
        cases.append(huffman_decode_case(name, streams, symbols_, entries, target=200))
    return cases
