"""Context mixing against rANS and Huffman on the same entry streams: decode throughput (MB/s of
float32 weights, the Huffman and rANS rows' unit) and stored sizes.

The decode case times, on the Deep Compression SqueezeNet's codes and gaps (26 layers): loading
each layer's cm stream as the format does (``cm.decode``: the model rebuilt and run bit by bit,
the stream checked whole) against rANS's ``decode_pair`` and Huffman's whole-stream decode, all
three producing the same symbols. ``stream_sizes`` gives the bytes each coder stores for a
net's sparse-codebook layers (``net_layers``: plain, Huffman-, rANS- or cm-coded).
"""

from ..common import selected
from .contenders import Contender, FormatCase

CODED = ("sparse_codebook", "huffman", "rans", "cm")


def coded_forms(sc):
    """(sparse codebook, its Huffman-, rANS- and cm-coded forms)."""
    from ...engine.formats import CmCodebookWeight, HuffmanCodebookWeight, RansCodebookWeight

    return (sc, HuffmanCodebookWeight.from_sparse_codebook(sc),
            RansCodebookWeight.from_sparse_codebook(sc), CmCodebookWeight.from_sparse_codebook(sc))


def squeezenet_layers():
    """``coded_forms`` of each of the shipped Deep Compression SqueezeNet's 26 layers."""
    from ...models.squeezenet_dc import load_deep_compression_arrays, sparse_codebook_weight

    return [coded_forms(sparse_codebook_weight(layer))
            for layer in load_deep_compression_arrays().values()]


def net_layers(net):
    """``coded_forms`` of a net's sparse-codebook layers, whatever their coder."""
    out = []
    for layer in net.layers:
        fmt = getattr(layer, "weight_format", None)
        if fmt is not None and fmt.kind in CODED:
            out.append(coded_forms(fmt if fmt.kind == "sparse_codebook" else fmt.decoded()))
    return out


def cm_decode_case(name, layers, *, target=None):
    """``layers``: [``coded_forms``]; every contender returns each layer's (codes, gaps)."""
    from ...engine.formats import cm, huffman, rans

    symbols = []
    for sc, *_ in layers:
        codes, gaps, _ = sc.entries()
        symbols += [codes, gaps]
    expected = lambda: tuple(symbols)  # noqa: E731

    def context_mixing():
        out = []
        for sc, _, _, c in layers:
            out += cm.decode(c.stream, c.count, c.code_bits, c.gap_bits, *c.layout(),
                             ranks=c.ranks(c.centroids, c.code_bits))
        return tuple(out)

    def ans():
        out = []
        for _, _, r, _ in layers:
            out += rans.decode_pair((r.code_stream, r.code_freqs), (r.gap_stream, r.gap_freqs),
                                    r.count)
        return tuple(out)

    def huffman_decode():
        out = []
        for _, h, _, _ in layers:
            out += [huffman.decode(h.codes), huffman.decode(h.gaps)]
        return tuple(out)

    contenders = [Contender("robustcnn-cm", context_mixing, expected),
                  Contender("robustcnn-rans", ans, expected),
                  Contender("robustcnn-huffman", huffman_decode, expected)]
    weights = sum(sc.size for sc, *_ in layers)
    targets = (("robustcnn-cm", None, target),) if target else ()
    return FormatCase(name, contenders, ("robustcnn-huffman", "robustcnn-rans"),
                      weights_decoded=weights, targets=targets)


def cm_decode_cases(*, match=None):
    name = "cm vs rans vs huffman decode squeezenet codes+gaps, 26 layers (MB/s of dense float32)"
    if not selected(name, match):
        return []
    return [cm_decode_case(name, squeezenet_layers())]


def stream_sizes(layers):
    """Stored bytes summed over ``layers`` ([``coded_forms``]) per form, and per coder the
    entry streams' bytes alone (``*_streams``)."""
    out = dict.fromkeys(CODED, 0)
    out.update(huffman_streams=0, rans_streams=0, cm_streams=0)
    for sc, h, r, c in layers:
        for kind, fmt in zip(CODED, (sc, h, r, c)):
            out[kind] += fmt.stored_bytes()
        out["huffman_streams"] += h.codes.bits.nbytes + h.gaps.bits.nbytes
        out["rans_streams"] += r.code_stream.nbytes + r.gap_stream.nbytes
        out["cm_streams"] += c.stream.nbytes
    return out
