"""Bytes of weights each format stores and reads per inference: per format case, and per layer
of the Deep Compression SqueezeNet and of LeNet-5 pruned to Deep Compression's densities."""

import os
from dataclasses import dataclass

import numpy as np

from ...compress.prune import prune
from ...models.lenet import lenet5
from ..common import format_table
from .contenders import OURS_DENSE, SCIPY, TORCH_SPARSE, WEIGHT_BYTES
from .weights import CODE_BITS


@dataclass
class LayerBytes:
    """One layer's weight in several formats: {format column: stored bytes}."""

    name: str
    shape: tuple
    nonzeros: int
    entries: int  # stored entries of the sparse codebook, fillers included
    bytes: dict

    @property
    def size(self):
        return int(np.prod(self.shape))


NET_FORMATS = ("dense", "csr", CODE_BITS, "sparse codebook", "huffman")


def layer_bytes(name, sc, *, cache=False):
    """A layer given as a SparseCodebookWeight, converted to each of ``NET_FORMATS`` (and the
    Huffman decode-once cache, if asked) → LayerBytes. Every conversion is exact."""
    from ...engine.formats import CodebookWeight, CSRWeight, HuffmanCodebookWeight

    dense = sc.to_dense()
    huffman = HuffmanCodebookWeight.from_sparse_codebook(sc)
    out = {"dense": WEIGHT_BYTES * sc.size,
           "csr": CSRWeight.from_dense(dense).stored_bytes(),
           CODE_BITS: CodebookWeight.from_dense(dense, sc.code_bits,
                                                centroids=sc.centroids).stored_bytes(),
           "sparse codebook": sc.stored_bytes(),
           "huffman": huffman.stored_bytes()}
    if cache:
        out["huffman cached"] = huffman.decoded().stored_bytes()
    return LayerBytes(name, sc.shape, sc.nnz(), sc.count, out)


def squeezenet_bytes():
    """Per-layer bytes of the Deep Compression SqueezeNet, stored as its file stores it (sparse
    codebook: 8-bit codes, 4-bit gaps) and converted → (list of LayerBytes, file bytes)."""
    from ...models.squeezenet_dc import (WEIGHTS, load_deep_compression_arrays,
                                         sparse_codebook_weight)

    layers = load_deep_compression_arrays()
    rows = [layer_bytes(name, sparse_codebook_weight(layer), cache=True)
            for name, layer in layers.items()]
    biases = sum(WEIGHT_BYTES * layer.bias.size for layer in layers.values())
    return rows, os.path.getsize(WEIGHTS), biases


# Deep Compression's LeNet-5 (Han et al. 2016): the fraction of weights kept per layer
LENET5_DC_KEPT = {"conv1": 0.66, "conv2": 0.12, "ip1": 0.08, "ip2": 0.19}


def lenet5_bytes(seed=0):
    """Per-layer bytes of a fresh LeNet-5 magnitude-pruned (``compress.prune``) to Deep
    Compression's densities, its survivors quantized to 2**bits − 1 evenly spaced centroids
    (conv 8 bits, 4-bit gaps; FC 5 bits, 5-bit gaps; ``SparseCodebookWeight.from_dense``) → list
    of LayerBytes."""
    from ...engine.formats import SparseCodebookWeight

    net = lenet5(seed=seed)
    prune(net, {name: 1 - keep for name, keep in LENET5_DC_KEPT.items()})
    rows = []
    for name in LENET5_DC_KEPT:
        w = net.layer(name).dense_weight()
        bits = 8 if name.startswith("conv") else 5
        sc = SparseCodebookWeight.from_dense(w, bits, 4 if bits == 8 else 5)
        rows.append(layer_bytes(name, sc, cache=True))
    return rows


def total_row(rows, name="total"):
    formats = list(dict.fromkeys(k for r in rows for k in r.bytes))  # in the rows' order
    return LayerBytes(name, (sum(r.size for r in rows),), sum(r.nonzeros for r in rows),
                      sum(r.entries for r in rows),
                      {k: sum(r.bytes[k] for r in rows) for k in formats})


def _kib(n):
    return f"{n / 1024:,.1f}"


def net_bytes_table(rows):
    """Per layer: bytes of each format and its ratio to dense float32, then a total row."""
    header = ["layer", "shape", "weights", "kept", "entries"]
    for f in NET_FORMATS:
        header += [f"{f} KiB", "x"]
    lines = []
    for r in rows + [total_row(rows)]:
        line = [r.name, "x".join(map(str, r.shape)) if r.name != "total" else "",
                f"{r.size:,}", f"{r.nonzeros / r.size:.1%}", f"{r.entries:,}"]
        for f in NET_FORMATS:
            line += [_kib(r.bytes[f]), f"{r.bytes['dense'] / r.bytes[f]:.1f}x"]
        lines.append(line)
    return format_table(header, lines)


BYTES_READ_COLUMNS = ("dense", "csr", "sparse codebook", "huffman", "huffman cached",
                      "codebook4", "codebook5", CODE_BITS, TORCH_SPARSE, SCIPY)


def weight_bytes_read(pw):
    """{column of BYTES_READ_COLUMNS: bytes a forward pass reads} for a case's weight."""
    names = {"dense": OURS_DENSE, "csr": "robustcnn-csr",
             "sparse codebook": "robustcnn-sparse-codebook", "huffman": "robustcnn-huffman",
             "huffman cached": "robustcnn-huffman-cached", "codebook4": "robustcnn-codebook4",
             "codebook5": "robustcnn-codebook5"}
    out = {col: pw.formats[name][0].stored_bytes() for col, name in names.items()}
    out["dense"] = WEIGHT_BYTES * pw.size
    return {**out, **(pw.extra_bytes or {})}


def bytes_read_table(entries):
    """entries: [(name, {column: bytes})] → the table, KiB and × smaller than dense float32."""
    header = ["weight"] + [f"{c} KiB" for c in BYTES_READ_COLUMNS]
    lines = []
    for name, b in entries:
        lines.append([name] + [_kib(b[c]) if c in b else "-" for c in BYTES_READ_COLUMNS])
        lines.append([""] + [f"{b['dense'] / b[c]:.1f}x" if c in b else "-"
                             for c in BYTES_READ_COLUMNS])
    return format_table(header, lines)


def bytes_records(entries, squeezenet, lenet):
    """The --bytes-json document: every table as a list of {name, format, bytes}."""
    def layers(rows):
        return [{"layer": r.name, "shape": list(r.shape), "nonzeros": r.nonzeros,
                 "entries": r.entries, "format": f, "bytes": n}
                for r in rows + [total_row(rows)] for f, n in r.bytes.items()]

    return {
        "note": "bytes of weight data, as stored; dense = 4 bytes per weight; huffman cached = "
                "the decoded sparse codebook; codebook (code bits) = a dense-pattern codebook at "
                "the sparse codebook's code width",
        "bytes_read_per_inference": [{"weight": name, "format": f, "bytes": n}
                                     for name, b in entries for f, n in b.items()],
        "squeezenet_v1.0_deep_compression": layers(squeezenet),
        "lenet5_deep_compression_densities": layers(lenet),
    }




def nets_bytes_read(squeezenet, lenet):
    """Whole-net rows of the bytes-read table."""
    out = []
    for name, rows in (("squeezenet v1.0 DC, whole net", squeezenet),
                       ("lenet-5 DC densities, whole net", lenet)):
        out.append((name, total_row(rows).bytes))
    return out

