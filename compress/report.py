"""Size accounting, as Deep Compression's per-layer tables (Han et al. 2016, Tables 2–5).

For each layer with a weight: its weights, the share kept after pruning (P), the bits per stored
weight and per relative index after quantization (P+Q) and after Huffman coding (P+Q+H), and the
compression ratio against dense float32 at each stage, computed from the formats' exact stored
bytes:

    P      the pruned weight as CSR (float32 values, narrowest integer indices)
    P+Q    the same non-zeros as a sparse codebook (code and gap bits of the layer)
    P+Q+H  the sparse codebook's codes and gaps Huffman-coded (rANS- or context-mixing-coded
           for a ``rans`` or ``cm`` layer)

A layer that was never pruned or quantized counts at its own format in every column. The total
row adds the layers; ``file_bytes`` is the size of the actual file on disk, biases, architecture
and header included, against the float32 dense parameters. The last column, bits per weight as
stored, divides a layer's final stored bytes (codes, indices, scales, tables) by its weights.

A layer in another format (int8, ternary, binary, power-of-two, …) counts its own stored bytes
in every column, with its code bits (``value_bits``) as bits per weight.
"""

import numpy as np

from ..engine.formats import CSRWeight, HuffmanCodebookWeight
from ..engine.formats.sparse_codebook import DecodedAtLoad


def _stages(fmt):
    """Stored bytes of a layer's weight at P, P+Q and P+Q+H, plus its code/gap bits."""
    if isinstance(fmt, DecodedAtLoad):  # rans, cm: the entropy-coded column holds their bits
        sc = fmt.decoded()
        csr = CSRWeight.from_dense(sc.to_dense())
        code_bits, gap_bits = fmt.entry_bits()
        return {"P": csr.stored_bytes(), "P+Q": sc.stored_bytes(), "P+Q+H": fmt.stored_bytes(),
                "code_bits": sc.code_bits, "gap_bits": sc.gap_bits,
                "huffman_code_bits": code_bits, "huffman_gap_bits": gap_bits}
    if fmt.kind == "huffman":
        sc, hf = fmt.decoded(), fmt
    elif fmt.kind == "sparse_codebook":
        sc, hf = fmt, HuffmanCodebookWeight.from_sparse_codebook(fmt)
    else:
        sc = hf = None
    if sc is not None:
        csr = CSRWeight.from_dense(sc.to_dense())
        codes, gaps, _ = sc.entries()
        return {"P": csr.stored_bytes(), "P+Q": sc.stored_bytes(), "P+Q+H": hf.stored_bytes(),
                "code_bits": sc.code_bits, "gap_bits": sc.gap_bits,
                "huffman_code_bits": hf.codes.nbits / max(codes.size, 1),
                "huffman_gap_bits": hf.gaps.nbits / max(gaps.size, 1)}
    if fmt.kind == "csr":
        own = fmt.stored_bytes()
        return {"P": own, "P+Q": own, "P+Q+H": own, "code_bits": 32, "gap_bits": None}
    own = fmt.stored_bytes()
    return {"P": own, "P+Q": own, "P+Q+H": own, "code_bits": fmt.value_bits(), "gap_bits": None}


def layer_table(net):
    """One row per layer with a weight (see the module docstring), then a total row."""
    rows = []
    for layer in net.layers:
        fmt = getattr(layer, "weight_format", None)
        if fmt is None:
            continue
        dense = 4 * fmt.size
        row = {"layer": layer.name, "type": layer.type, "format": fmt.kind,
               "weights": fmt.size, "kept": fmt.nnz() / max(fmt.size, 1), "dense_bytes": dense}
        row.update(_stages(fmt))
        for stage in ("P", "P+Q", "P+Q+H"):
            row[f"ratio {stage}"] = dense / max(row[stage], 1)
        row["bits_per_weight"] = 8 * row["P+Q+H"] / max(fmt.size, 1)
        rows.append(row)
    total = {"layer": "total", "type": "", "format": "",
             "weights": sum(r["weights"] for r in rows),
             "dense_bytes": sum(r["dense_bytes"] for r in rows)}
    total["kept"] = sum(r["kept"] * r["weights"] for r in rows) / max(total["weights"], 1)
    for stage in ("P", "P+Q", "P+Q+H"):
        total[stage] = sum(r[stage] for r in rows)
        total[f"ratio {stage}"] = total["dense_bytes"] / max(total[stage], 1)
    total["bits_per_weight"] = 8 * total["P+Q+H"] / max(total["weights"], 1)
    rows.append(total)
    return rows


def dense_parameter_bytes(net):
    """float32 bytes of every parameter of the net as if dense (weights and biases)."""
    n = 0
    for layer in net.layers:
        fmt = getattr(layer, "weight_format", None)
        n += fmt.size if fmt is not None else 0
        n += sum(v.size for k, v in layer.params.items() if fmt is None or k not in fmt.trainable)
    return 4 * n


def format_layer_table(rows, *, file_bytes=None, dense_bytes=None):
    """The rows of ``layer_table`` as aligned text (Deep Compression's columns)."""
    def bits(r, key):
        v = r.get(key)
        return "" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

    head = ["layer", "format", "#weights", "kept (P)", "bits/w P+Q", "bits/idx P+Q",
            "bits/w P+Q+H", "bits/idx P+Q+H", "P KiB", "P+Q KiB", "P+Q+H KiB", "ratio P",
            "ratio P+Q", "ratio P+Q+H", "bits/w stored"]
    body = []
    for r in rows:
        body.append([r["layer"], r["format"], f"{r['weights']:,}", f"{100 * r['kept']:.1f}%",
                     bits(r, "code_bits"), bits(r, "gap_bits"), bits(r, "huffman_code_bits"),
                     bits(r, "huffman_gap_bits"), f"{r['P'] / 1024:.1f}",
                     f"{r['P+Q'] / 1024:.1f}", f"{r['P+Q+H'] / 1024:.1f}",
                     f"{r['ratio P']:.1f}x", f"{r['ratio P+Q']:.1f}x", f"{r['ratio P+Q+H']:.1f}x",
                     f"{r['bits_per_weight']:.2f}"])
    widths = [max(len(str(x[i])) for x in [head] + body) for i in range(len(head))]
    lines = ["  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in
                       enumerate(zip(row, widths))) for row in [head] + body]
    if file_bytes is not None and dense_bytes:
        lines.append(f"file on disk: {file_bytes:,} bytes; dense float32 parameters "
                     f"{dense_bytes:,} bytes; ratio {dense_bytes / file_bytes:.1f}x")
    return "\n".join(lines)
