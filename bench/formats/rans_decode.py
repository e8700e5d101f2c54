"""rANS against Huffman on the same entry streams: decode throughput (MB/s of float32 weights,
the Huffman rows' unit) and stored sizes.

The decode case times, on the Deep Compression SqueezeNet's codes and gaps (26 layers): loading
each layer's rANS streams as the format does (``rans.decode_pair``: both streams in one loop,
tables built, the stream checked whole) against Huffman's whole-stream decode
(``huffman.decode`` of each stream), both producing the same symbols. ``weights_decoded`` is
the float32 weights the streams stand for, dense (the layers' sizes): the unit the issue's
"GB/s of float32 weights" asks for. ``stream_sizes`` gives the bytes each coder stores for a
net's sparse-codebook layers.
"""

import numpy as np

from ..common import selected
from .contenders import Contender, FormatCase


def squeezenet_streams():
    """[(sparse codebook weight, its Huffman-coded and rANS-coded forms)] of the shipped Deep
    Compression SqueezeNet's 26 layers."""
    from ...engine.formats import HuffmanCodebookWeight, RansCodebookWeight
    from ...models.squeezenet_dc import load_deep_compression_arrays, sparse_codebook_weight

    out = []
    for layer in load_deep_compression_arrays().values():
        sc = sparse_codebook_weight(layer)
        out.append((sc, HuffmanCodebookWeight.from_sparse_codebook(sc),
                    RansCodebookWeight.from_sparse_codebook(sc)))
    return out


def rans_decode_case(name, layers, *, target=None):
    """``layers``: [(sparse codebook, Huffman form, rANS form)]; every contender returns each
    layer's (codes, gaps)."""
    from ...engine.formats import huffman, rans

    symbols = []
    for sc, _, _ in layers:
        codes, gaps, _ = sc.entries()
        symbols += [codes, gaps]
    expected = lambda: tuple(symbols)  # noqa: E731

    def ours():
        out = []
        for _, _, r in layers:
            out += rans.decode_pair((r.code_stream, r.code_freqs), (r.gap_stream, r.gap_freqs),
                                    r.count)
        return tuple(out)

    def theirs():
        out = []
        for _, h, _ in layers:
            out += [huffman.decode(h.codes), huffman.decode(h.gaps)]
        return tuple(out)

    contenders = [Contender("robustcnn-rans", ours, expected),
                  Contender("robustcnn-huffman", theirs, expected)]
    weights = sum(sc.size for sc, _, _ in layers)
    targets = (("robustcnn-rans", None, target),) if target else ()
    return FormatCase(name, contenders, ("robustcnn-huffman",), weights_decoded=weights,
                      targets=targets)


def rans_decode_cases(*, match=None):
    name = "rans vs huffman decode squeezenet codes+gaps, 26 layers (MB/s of dense float32)"
    if not selected(name, match):
        return []
    return [rans_decode_case(name, squeezenet_streams(), target=1000)]


def stream_sizes(layers):
    """{"sparse_codebook", "huffman", "rans": stored bytes summed over ``layers``}, and per
    coder the code and gap streams' bytes alone."""
    out = {"sparse_codebook": 0, "huffman": 0, "rans": 0, "huffman_streams": 0, "rans_streams": 0}
    for sc, h, r in layers:
        out["sparse_codebook"] += sc.stored_bytes()
        out["huffman"] += h.stored_bytes()
        out["rans"] += r.stored_bytes()
        out["huffman_streams"] += h.codes.bits.nbytes + h.gaps.bits.nbytes
        out["rans_streams"] += r.code_stream.nbytes + r.gap_stream.nbytes
    return out


def net_layers(net):
    """The sparse-codebook layers of a net (plain, Huffman- or rANS-coded) in all three forms."""
    from ...engine.formats import HuffmanCodebookWeight, RansCodebookWeight

    out = []
    for layer in net.layers:
        fmt = getattr(layer, "weight_format", None)
        if fmt is None or fmt.kind not in ("sparse_codebook", "huffman", "rans"):
            continue
        sc = fmt if fmt.kind == "sparse_codebook" else fmt.decoded()
        out.append((sc, HuffmanCodebookWeight.from_sparse_codebook(sc),
                    RansCodebookWeight.from_sparse_codebook(sc)))
    return out
