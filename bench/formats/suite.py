"""The weight-format section: the format cases in table order, Huffman, rANS and cm decode
throughput, the bytes tables; its report, targets, --json records and --bytes-json document."""

import json
import sys
from dataclasses import dataclass

from ...atomic import atomic_path
from ..common import Suite, note
from ..dense import CONVS
from .contenders import (decode_table, format_records, format_results_table, format_targets,
                         run_format_case)
from .huffman_decode import huffman_decode_cases
from .cm_decode import cm_decode_cases
from .rans_decode import rans_decode_cases
from .layers import sparse_conv_cases, sparse_linear_cases
from .weight_bytes import (bytes_read_table, bytes_records, lenet5_bytes, net_bytes_table,
                           nets_bytes_read, squeezenet_bytes, total_row, weight_bytes_read)
from .weights import CODE_BITS

SPARSITIES = (0.9, 0.95)


def format_cases(match=None):
    """The weight-format cases in table order, then the Huffman decode cases."""
    cases = []
    for sparsity in SPARSITIES:
        cases += sparse_linear_cases(sparsity=sparsity, match=match)
    for spec in (CONVS["alexnet-conv2"], CONVS["vgg"]):
        for sparsity in SPARSITIES:
            cases += sparse_conv_cases(**spec, sparsity=sparsity, match=match)
    return (cases + huffman_decode_cases(match=match) + rans_decode_cases(match=match)
            + cm_decode_cases(match=match))


@dataclass
class Outcome:
    results: list  # FormatResult per case
    bytes_entries: list  # [(weight, {column: bytes})]: the bytes-read table
    squeezenet: tuple  # (LayerBytes per layer, file bytes, bias bytes)
    lenet: list  # LayerBytes per layer


def plan(args):
    return args


def run(args, budget):
    """Run the format cases and build the bytes tables → Outcome, or None if ``--cases``
    selects none of it (with ``--formats``, the bytes tables still)."""
    cases = format_cases(match=args.cases)
    if not cases and args.cases and not args.formats:
        return None
    results = []
    for case in cases:
        print(f"  running {case.name}", file=sys.stderr, flush=True)
        results.append(run_format_case(case, budget))
    weights = {}
    for r in results:
        if r.case.weight is not None:
            weights.setdefault(r.case.weight.name, weight_bytes_read(r.case.weight))
    squeezenet, lenet = squeezenet_bytes(), lenet5_bytes()
    entries = list(weights.items()) + nets_bytes_read(squeezenet[0], lenet)
    return Outcome(results, entries, squeezenet, lenet)


FORMAT_NOTES = (
    "Weights: a random weight, magnitude-pruned, its survivors on 2**bits − 1 evenly spaced "
    "values (FC: 5-bit codes and gaps; conv: 8-bit codes, 4-bit gaps; codebook4/5 on their own "
    "4-/5-bit quantization of the same pruned weight), so every conversion is exact. Each "
    "implementation is checked against torch float64 on the weight it stores. vs X = X's time / "
    "this row's time: > 1 means this row is faster. All implementations of a case take turns. "
    "Threads: ours and torch use the same count; scipy.sparse is single-threaded. "
    "torch-sparse-csr: torch.sparse.mm(W.to_sparse_csr(), xᵀ); at batch 1 torch-sparse-csr-mv "
    "is torch.mv on the same weight, torch's faster path for a vector. "
    "robustcnn-huffman decodes each row's codes and gaps every time a kernel visits the row "
    "(streaming); robustcnn-huffman-cached computes on HuffmanCodebookWeight.decoded(), decoded "
    "once, outside the timing. FC, sparse formats: the row is the kernel linear.direct_walk "
    "picks at that batch; the row marked (direct) or (rows) is the other kernel forced (the walk "
    "over the stored entries per example, or each row decoded once for the batch), to show the "
    "crossover. fwd+bwd: the forward, dx, the format's own weight gradient "
    "(CSR: dL/dW at the stored positions) and db; torch: dense autograd.")


def report(outcome, args, peak):
    """Timings, decode throughput, bytes; and the --bytes-json document if asked for."""
    if outcome is None:
        return
    print_formats(outcome)
    if args.bytes_json:
        with atomic_path(args.bytes_json) as tmp, open(tmp, "w") as f:
            json.dump(bytes_records(outcome.bytes_entries, outcome.squeezenet[0], outcome.lenet),
                      f, indent=1)
            f.write("\n")


def print_formats(outcome):
    """The format section of the report: timings, decode throughput, bytes."""
    results = outcome.results
    timed = [r for r in results if not r.case.weights_decoded]
    decoded = [r for r in results if r.case.weights_decoded]
    if timed:
        print()
        print("weight formats: pruned weights in every format, side by side")
        print(format_results_table(timed))
        note(FORMAT_NOTES)
        seen = {}
        for r in timed:
            seen.setdefault(r.case.weight.name, r.case.weight)
        note("decode-once cost of the Huffman cache (HuffmanCodebookWeight.decoded(), not in "
             "the times above): " + "; ".join(f"{pw.name} {pw.decode_once_s * 1e3:.1f} ms"
                                              for pw in seen.values()))
    if decoded:
        print()
        note("Huffman decode throughput (MB/s = decoded weights × 4 bytes, each decoded weight "
             "taken as one float32; the skewed stream decodes one symbol per weight, SqueezeNet "
             "one code + one gap symbol per stored entry)")
        print(decode_table(decoded))
        note("robustcnn-huffman: huffman.decode (validate, tables, the parallel kernel over "
             "blocks, end check); robustcnn-huffman-kernel: decode_blocks alone on prebuilt "
             "tables; numpy-huffman: the bench's NumPy decoder (vectorised across blocks).")
    print()
    note("bytes of weights read per inference (= stored bytes for the streaming formats; "
         "Huffman cached: the decoded sparse codebook's; dense: 4 × weights); KiB, and below "
         "each row × smaller than dense float32")
    print(bytes_read_table(outcome.bytes_entries))
    note(f"{CODE_BITS}: a dense-pattern codebook at the sparse codebook's code width (FC 5 bits, "
         "conv 8; LeNet-5: conv 8, ip 5), bytes only where not timed. torch-sparse-csr: int64 "
         "indices; scipy-sparse: int32.")
    rows, file_bytes, biases = outcome.squeezenet
    total = total_row(rows)
    print()
    note("SqueezeNet v1.0, Deep Compression (compressed_SqueezeNet.net: pruned, 8-bit codes, "
         "4-bit gaps, no Huffman), per layer, KiB and × smaller than dense float32")
    print(net_bytes_table(rows))
    note(f"the file: {file_bytes:,} bytes = {file_bytes / 1024:.0f} KiB (published: 660 KB); "
         f"our sparse codebook total + float32 biases = "
         f"{(total.bytes['sparse codebook'] + biases) / 1024:,.0f} KiB; with Huffman coding = "
         f"{(total.bytes['huffman'] + biases) / 1024:,.0f} KiB")
    print()
    note("LeNet-5 (fresh lenet5(), magnitude-pruned to Deep Compression's densities conv1 66%, "
         "conv2 12%, ip1 8%, ip2 19%; conv 8-bit codes + 4-bit gaps, ip 5 + 5), per layer")
    lenet = outcome.lenet
    print(net_bytes_table(lenet))
    lenet_total = total_row(lenet)
    note(f"published (Han et al. 2016): 1,720 KB -> 44 KB, 39x; here "
         f"{lenet_total.bytes['dense'] / 1024:,.0f} KiB -> "
         f"{lenet_total.bytes['huffman'] / 1024:,.1f} KiB with Huffman "
         f"({lenet_total.bytes['dense'] / lenet_total.bytes['huffman']:.0f}x), biases not counted")


def targets(outcome):
    return format_targets(outcome.results) if outcome else []


def records(outcome):
    return format_records(outcome.results) if outcome else []


SUITE = Suite("weight formats", plan, run, report, targets, records)
