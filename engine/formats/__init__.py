"""Weight formats the kernels compute on directly.

    dense            the (O, …) array
    csr              pruned weights: data, indices, indptr (scipy.sparse's names)
    codebook         weight sharing: k-bit codes (k = 1..8) into centroids (the net's dtype)
    sparse_codebook  Deep Compression / EIE: codes of the non-zeros + fixed-width relative gaps
    huffman          the sparse codebook's codes and gaps Huffman-coded, one block per row
    int8             8-bit linear quantization: int8 codes, one scale per output channel
    ternary          Trained Ternary Quantization: 2-bit codes of +wp, 0, −wn
    ttq_latent       what TTQ trains: latent weights ternarized by a threshold, and the scales
    rans             the sparse codebook's codes and gaps rANS-coded (decoded once at load)
    cm               the same streams coded by context mixing (cm.py; decoded once at load)
    pow2             Incremental Network Quantization: b-bit codes of 0 and ±2^n, n ∈ [n2, n1]
    inq_latent       what INQ retrains: float weights, a frozen share already powers of two
    binary           BinaryConnect / XNOR-Net: sign bits, 64 to a word per row, a scale per row
    binary_latent    what binary training updates: latent weights, their scaled signs forward

``FORMATS`` maps each name to its class; ``Net.convert(layer, kind, **options)`` and
``Layer.convert`` re-encode a layer. ``robustcnn.engine.formats.huffman`` is the canonical
Huffman codec the Huffman-coded format builds on.
"""

from .binary import BinaryLatentWeight, BinaryWeight
from .cm_codebook import CmCodebookWeight
from .codebook import CodebookWeight
from .csr import CSRWeight
from .dense import DenseWeight
from .huffman_codebook import HuffmanCodebookWeight
from .int8 import Int8Weight
from .pow2 import INQLatentWeight, Pow2Weight
from .rans_codebook import RansCodebookWeight
from .ternary import TernaryWeight, TTQLatentWeight
from .sparse_codebook import SparseCodebookWeight

FORMATS = {cls.kind: cls for cls in (DenseWeight, CSRWeight, CodebookWeight, SparseCodebookWeight,
                                     HuffmanCodebookWeight, Int8Weight, TernaryWeight,
                                     TTQLatentWeight, Pow2Weight, INQLatentWeight,
                                     RansCodebookWeight, BinaryWeight, BinaryLatentWeight,
                                     CmCodebookWeight)}

__all__ = ["FORMATS", "DenseWeight", "CSRWeight", "CodebookWeight", "SparseCodebookWeight",
           "HuffmanCodebookWeight", "Int8Weight", "TernaryWeight", "TTQLatentWeight", "Pow2Weight",
           "INQLatentWeight", "RansCodebookWeight", "BinaryWeight", "BinaryLatentWeight",
           "CmCodebookWeight"]
