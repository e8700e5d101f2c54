"""Codebook weights (weight sharing, trained quantization): k-bit codes into a table of centroids.

    W.flat[i] = centroids[codes[i]],   codes packed k bits each (k = 1..8), LSB first

Kernels decode a block of rows at a time into a small scratch matrix and hand it to BLAS; the
whole dense weight never exists. Decoding is bound by its stores: for float32 values and codes of
up to ``PAIR_BITS`` bits, two codes at a time index a table of the centroid pairs, built per call
from the current centroids (``pair_table``), and each pair goes out in one 8-byte store. All
16 M codes of FC 4096², one thread, CPU time: 3.1 ms against 5.2 ms a code at a time, for 4- and
5-bit codes alike. Training updates the centroids only (Deep Compression, eq. 3):

    dL/dcentroids[c] = Σ_{i : codes[i] = c} dL/dW.flat[i]
"""

from collections import namedtuple

import numpy as np
from numba import njit

from .._jit import JIT
from .base import (WeightFormat, check_bits, check_bytes, check_values, pack_bits,
                   packed_nbytes, read_packed, read_word, register_block_decoder, unpack_bits,
                   word_groups)
from .dense import HEADER_BYTES

CodebookArrays = namedtuple("CodebookArrays", "codes bits centroids ncols pairs")

# Widest codes decoded two at a time: the pair table has 2^(2·bits) entries of 8 bytes (8 KiB at
# 5 bits, in L1 beside the scratch rows' stream).
PAIR_BITS = 5


def pair_table(centroids, bits):
    """(2^(2·bits),) uint64: entry hi << bits | lo holds the float32 pair (centroids[lo],
    centroids[hi]) as stored in memory (lo first); empty where pairs do not apply (other value
    dtypes, codes wider than ``PAIR_BITS``). Codes past the codebook never occur (checked at
    load); their entries repeat the last centroid."""
    if centroids.dtype != np.float32 or bits > PAIR_BITS:
        return np.empty(0, dtype=np.uint64)
    idx = np.arange(1 << (2 * bits))
    lo = np.take(centroids, idx & ((1 << bits) - 1), mode="clip")
    hi = np.take(centroids, idx >> bits, mode="clip")
    return np.ascontiguousarray(np.stack([lo, hi], axis=1)).view(np.uint64).reshape(-1)


@njit(**JIT)
def codebook_rows(W, lo, hi, scratch):
    # scratch: (≥ hi − lo, K) → rows lo..hi of W decoded: scratch[r, j] = centroids[code(lo + r, j)]
    # Below 8 bits, whole groups of 8 codes come from one 8-byte read (8 codes of b bits are b
    # bytes), then shifts and masks; the codes before the first and after the last whole group
    # one by one.
    K, codes, bits, centroids = W.ncols, W.codes, W.bits, W.centroids
    out = scratch[:hi - lo]
    flat = out.reshape(-1)
    n = flat.shape[0]
    start = lo * K
    if bits == 8:  # one byte per code: a plain gather
        src = codes[start:start + n]
        for i in range(n):
            flat[i] = centroids[src[i]]
        return out
    i = 0
    while i < n and (start + i) & 7:
        flat[i] = centroids[read_packed(codes, start + i, bits)]
        i += 1
    mask = (1 << bits) - 1
    group = (start + i) >> 3
    groups = min((start + n) >> 3, word_groups(codes, bits))
    if W.pairs.shape[0] > 0 and flat.itemsize == 4 and not (i & 1):
        # two codes per lookup, one 8-byte store per pair (float32; pairs aligned: i even)
        wide = flat[:n & ~1].view(np.uint64)
        pairs = W.pairs
        mask2 = np.uint64((1 << (2 * bits)) - 1)
        shift2 = np.uint64(2 * bits)
        while group < groups:
            word = np.uint64(read_word(codes, group * bits))
            dst = np.uint64((group * 8 - start) >> 1)
            for k in range(4):
                wide[dst + np.uint64(k)] = pairs[word & mask2]
                word >>= shift2
            group += 1
    while group < groups:
        word = read_word(codes, group * bits)
        dst = np.uint64(group * 8 - start)  # unsigned: no negative-index wraparound
        for k in range(8):
            flat[dst + np.uint64(k)] = centroids[word & mask]
            word >>= bits
        group += 1
    i = max(i, groups * 8 - start)
    while i < n:
        flat[i] = centroids[read_packed(codes, start + i, bits)]
        i += 1
    return out


register_block_decoder(CodebookArrays, codebook_rows)


def linear_centroids(values, k):
    """k centroids spaced evenly over [min, max] of ``values`` (Deep Compression's linear
    initialisation; trained quantization then moves them, see compress/)."""
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    return np.linspace(lo, hi, k) if k > 1 else np.array([(lo + hi) / 2])


def nearest_codes(values, centroids):
    """Index of the nearest centroid for each value (a value halfway between two goes to the
    smaller centroid)."""
    order = np.argsort(centroids, kind="stable")
    c = centroids[order]
    if c.size == 1:
        return np.zeros(values.shape, dtype=np.int64)
    mid = (c[1:] + c[:-1]) / 2
    return order[np.searchsorted(mid, values, side="left")]


class CodebookWeight(WeightFormat):
    kind = "codebook"
    array_names = ("codes", "centroids")
    creation_options = ("bits",)  # the options from_dense takes
    trainable = ("centroids",)
    decay = ()

    def __init__(self, shape, codes, centroids, bits, *, at="codebook"):
        super().__init__(shape, centroids.dtype)
        self.codes, self.centroids, self.bits = codes, centroids, int(bits)
        self._validate(at)

    def _validate(self, at):
        if not 1 <= self.bits <= 8:
            raise ValueError(f"{at}: codebook bits must be 1..8, got {self.bits}")
        if not 1 <= self.centroids.size <= 1 << self.bits:
            raise ValueError(f"{at}: {self.centroids.size} centroids do not fit {self.bits}-bit codes")
        expected = packed_nbytes(self.size, self.bits)
        if self.codes.dtype != np.uint8 or self.codes.shape != (expected,):
            raise ValueError(f"{at}: packed codes must be {expected} uint8 bytes for {self.size} "
                             f"{self.bits}-bit codes, got {self.codes.dtype} {self.codes.shape}")
        if self.size and unpack_bits(self.codes, self.size, self.bits).max() >= self.centroids.size:
            raise ValueError(f"{at}: a code is >= the codebook size {self.centroids.size}")

    @classmethod
    def from_dense(cls, weight, bits=8, *, centroids=None, dtype=None, at="codebook"):
        """Codes for ``weight``: exact if it has ≤ 2**bits distinct values and no centroids are
        given; otherwise nearest of ``centroids`` (default: ``linear_centroids``) — lossy."""
        bits = check_bits(bits, "bits", at)
        weight = np.asarray(weight)
        flat = weight.reshape(-1)
        if centroids is None:
            distinct, exact = np.unique(flat, return_inverse=True)
            if distinct.size <= 1 << bits:  # the values themselves: exact, no rounding
                return cls(weight.shape, pack_bits(exact.reshape(-1), bits),
                           distinct.astype(dtype or weight.dtype), bits, at=at)
            centroids = linear_centroids(flat, 1 << bits)
        centroids = np.asarray(centroids, dtype=dtype or weight.dtype)
        codes = nearest_codes(flat, centroids)
        return cls(weight.shape, pack_bits(codes, bits), centroids, bits, at=at)

    @classmethod
    def from_arrays(cls, shape, arrays, options, *, dtype=np.float32, at="codebook"):
        codes = check_bytes(arrays["codes"], "codes", at)
        centroids = check_values(arrays["centroids"], "centroids", at, dtype)
        return cls(shape, codes, centroids, check_bits(options["bits"], "bits", at), at=at)

    def arrays(self):
        return {"codes": self.codes, "centroids": self.centroids}

    def options(self):
        return {"bits": self.bits}

    def operand(self):
        return CodebookArrays(self.codes, self.bits, self.centroids, self.cols,
                              pair_table(self.centroids, self.bits))

    def value_bits(self):
        return self.bits

    def code_array(self):
        """The unpacked codes, (O·K,) uint8."""
        return unpack_bits(self.codes, self.size, self.bits)

    def to_dense(self):
        return self.centroids[self.code_array()].reshape(self.shape)

    def reduce_dense_grad(self, dweight):
        """{"centroids": dL/dcentroids} from dL/dW: each centroid's weights summed (DC eq. 3)."""
        return {"centroids": np.bincount(self.code_array(), weights=dweight.reshape(-1),
                                         minlength=self.centroids.size).astype(self.dtype)}

    def stored_nbytes(self):
        return {"codes": self.codes.nbytes, "centroids": self.centroids.size * 4,
                "header": HEADER_BYTES + 1}
