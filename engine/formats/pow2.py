"""Power-of-two weights (Incremental Network Quantization: Zhou, Yao, Guo, Xu & Chen, ICLR 2017)
and the partly quantized weights INQ retrains.

The paper's quantizer for a layer W_l with b bits (one of them for zero, §3.1):

    P_l = {±2^n1, …, ±2^n2, 0}                                              (eq. 1)
    Ŵ_l(i, j) = β·sgn(W_l(i, j)) if (α + β)/2 ≤ |W_l(i, j)| < 3β/2, else 0   (eq. 2)
        (α, β adjacent elements of P_l's non-negative part sorted, α < β)
    n1 = ⌊log2(4s/3)⌋,  s = max|W_l|                                         (eq. 3)
    n2 = n1 + 1 − 2^(b−1)/2                                                  (eq. 4)

so m = 2^(b−2) exponents per sign and 2m + 1 = 2^(b−1) + 1 values (b = 5: 8 exponents, 17
values). Eq. 2 with β = 2^n, α = 2^(n−1) rounds |w| ∈ [3·2^(n−2), 3·2^(n−1)) to 2^n; with
β = 2^n2, α = 0, |w| ∈ [2^(n2−1), 3·2^(n2−1)) goes to 2^n2 and smaller magnitudes to 0. By eq. 3,
s < 3·2^(n1−1): the largest weight of the layer rounds to 2^n1 at most. Weights that grow past
3·2^(n1−1) in retraining (n1 fixed at the start) are clipped to ±2^n1 here, where eq. 2 read
literally would give 0.

``pow2``: the quantized weight as b-bit codes (b = 2..8) packed LSB first, and n1:

    W.flat[i] = 0 if c = 0,  +2^(n1 − c + 1) if 1 ≤ c ≤ m,  −2^(n1 − c + m + 1) if m < c ≤ 2m

The kernels decode a block of rows into scratch for BLAS, as a codebook's: code → a table of
the 2m + 1 values (the product by 2^n is then BLAS's float multiply by the table's entry; an
``ldexp`` per weight, ``pow2_rows_ldexp``, decodes the same rows — measured slower, see
bench/formats/pow2.py). Nothing is trainable: INQ's weights are fixed once quantized; the input
gradient flows as through any weight.

``inq_latent``: what INQ retrains — float weights of which a ``frozen`` share already holds its
quantized value. The frozen entries get no gradient (dL/dW masked) and no weight decay, so an
optimizer leaves them where they are; the rest train as dense weights:

    dL/dW̃_i = 0 if frozen_i, else dL/dW_i
"""

from collections import namedtuple

import numpy as np
from numba import njit

from .._jit import JIT
from .base import (DenseArrays, WeightFormat, check_bytes, check_structure_array, check_weight,
                   pack_bits, packed_nbytes, register_block_decoder, unpack_bits)
from .codebook import codebook_rows, pair_table
from .dense import HEADER_BYTES

# The table decoder is the codebook's, compiled for this tuple (same field names, the pair
# table too).
Pow2Arrays = namedtuple("Pow2Arrays", "codes bits centroids ncols pairs")
register_block_decoder(Pow2Arrays, codebook_rows)

MIN_BITS, MAX_BITS = 2, 8
# float32 normal exponents: every stored value 2^n, n ∈ [n2, n1], is a normal float32.
MIN_EXPONENT, MAX_EXPONENT = -126, 127


def exponents_per_sign(bits):
    """m = 2^(b−2): eq. 4's n1 − n2 + 1."""
    return 1 << (bits - 2)


def n2_of(n1, bits):
    """n2 = n1 + 1 − 2^(b−1)/2 (eq. 4)."""
    return n1 + 1 - (1 << (bits - 1)) // 2


def round_exponent(a):
    """n with 3·2^(n−2) ≤ a < 3·2^(n−1) for a > 0 (eq. 2's rounding of |w| to 2^n; for a = s
    it is eq. 3's n1 = ⌊log2(4s/3)⌋). Exact at the boundaries: log2 only guesses, comparisons
    with the (exact) powers of two decide."""
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(divide="ignore"):
        n = np.floor(np.log2(a / 3.0)).astype(np.int64) + 2
    n = np.where(a < 3.0 * np.ldexp(1.0, n - 2), n - 1, n)
    return np.where(a >= 3.0 * np.ldexp(1.0, n - 1), n + 1, n)


def top_exponent(weight):
    """n1 of eq. 3 for a weight array (0 for an all-zero weight, which has no scale)."""
    s = float(np.abs(np.asarray(weight, dtype=np.float64)).max(initial=0.0))
    return int(round_exponent(s)) if s > 0 else 0


def quantize_codes(weight, n1, bits):
    """Eq. 2 on every weight → codes (see the module docstring), flattened uint8."""
    w = np.asarray(weight, dtype=np.float64).reshape(-1)
    m, n2 = exponents_per_sign(bits), n2_of(n1, bits)
    a = np.abs(w)
    n = np.minimum(round_exponent(np.where(a > 0, a, 1.0)), n1)  # clipped to 2^n1 (docstring)
    zero = (a < np.ldexp(1.0, n2 - 1)) | (a == 0)
    n = np.maximum(n, n2)  # a ∈ [2^(n2−1), 3·2^(n2−2)) rounds up to 2^n2 (α = 0)
    code = 1 + (n1 - n) + np.where(w < 0, m, 0)
    return np.where(zero, 0, code).astype(np.uint8)


def value_table(n1, bits, dtype):
    """The 2m + 1 values by code: 0, +2^n1 … +2^n2, −2^n1 … −2^n2."""
    mags = np.ldexp(1.0, n1 - np.arange(exponents_per_sign(bits)))
    return np.concatenate([[0.0], mags, -mags]).astype(dtype)


def check_exponents(n1, bits, at):
    """n1 an integer with every 2^n, n ∈ [n2, n1], a normal float32; bits 2..8."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) \
            or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{at}: pow2 bits must be an integer {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    if isinstance(n1, bool) or not isinstance(n1, (int, np.integer)):
        raise ValueError(f"{at}: pow2 n1 must be an integer, got {n1!r}")
    if not (n1 <= MAX_EXPONENT and n2_of(int(n1), int(bits)) >= MIN_EXPONENT):
        raise ValueError(f"{at}: pow2 exponents n1 = {n1}, n2 = {n2_of(int(n1), int(bits))} "
                         f"leave float32's normal range [{MIN_EXPONENT}, {MAX_EXPONENT}]")
    return int(n1), int(bits)


@njit(**JIT)
def pow2_rows_ldexp(codes, bits, n1, K, lo, hi, scratch):
    # scratch: (≥ hi − lo, K) → rows lo..hi: 0, or ±2^(n1 − e) by an ldexp per weight
    # (the table decoder's alternative, kept for the bench's comparison)
    m = 1 << (bits - 2)
    mask = (1 << bits) - 1
    out = scratch[:hi - lo]
    flat = out.reshape(-1)
    start = lo * K
    for i in range(flat.shape[0]):
        bit = (start + i) * bits
        byte = bit >> 3
        after = min(byte + 1, codes.shape[0] - 1)
        c = ((np.int64(codes[byte]) | (np.int64(codes[after]) << 8)) >> (bit & 7)) & mask
        if c == 0:
            flat[i] = 0.0
        elif c <= m:
            flat[i] = np.ldexp(1.0, n1 - c + 1)
        else:
            flat[i] = -np.ldexp(1.0, n1 - c + m + 1)
    return out


class Pow2Weight(WeightFormat):
    kind = "pow2"
    array_names = ("codes",)
    creation_options = ("bits",)
    trainable = ()
    decay = ()

    def __init__(self, shape, codes, n1, bits, dtype, *, at="pow2"):
        super().__init__(shape, dtype)
        self.n1, self.bits = check_exponents(n1, bits, at)
        self.codes = codes
        need = packed_nbytes(self.size, self.bits)
        if self.codes.dtype != np.uint8 or self.codes.shape != (need,):
            raise ValueError(f"{at}: packed codes must be {need} uint8 bytes for {self.size} "
                             f"{self.bits}-bit codes, got {self.codes.dtype} {self.codes.shape}")
        top = 2 * exponents_per_sign(self.bits)
        if self.size and unpack_bits(self.codes, self.size, self.bits).max() > top:
            raise ValueError(f"{at}: a code is above {top}, the last of {self.bits}-bit "
                             f"power-of-two codes")
        tail = (self.size * self.bits) % 8
        if tail and self.codes[-1] >> tail:
            raise ValueError(f"{at}: the padding bits after the last code are not zero")
        self.table = value_table(self.n1, self.bits, self.dtype)

    @classmethod
    def from_dense(cls, weight, bits=5, *, n1=None, dtype=None, at="pow2"):
        """Eq. 2 on ``weight`` with n1 of eq. 3 (or the given one) and b = ``bits``."""
        weight = np.asarray(weight)
        n1 = top_exponent(weight) if n1 is None else n1
        n1, bits = check_exponents(n1, bits, at)
        return cls(weight.shape, pack_bits(quantize_codes(weight, n1, bits), bits), n1, bits,
                   dtype or weight.dtype, at=at)

    @classmethod
    def from_arrays(cls, shape, arrays, options, *, dtype=np.float32, at="pow2"):
        for key in ("bits", "n1"):
            if key not in options:
                raise ValueError(f"{at}: the pow2 format's option {key!r} is missing")
        return cls(shape, check_bytes(arrays["codes"], "codes", at), options["n1"],
                   options["bits"], dtype, at=at)

    def arrays(self):
        return {"codes": self.codes}

    def options(self):
        return {"bits": self.bits, "n1": self.n1}

    def astype(self, dtype):
        return Pow2Weight(self.shape, self.codes, self.n1, self.bits, dtype)

    def operand(self):
        return Pow2Arrays(self.codes, self.bits, self.table, self.cols,
                          pair_table(self.table, self.bits))

    def code_array(self):
        """The unpacked codes, (O·K,) uint8."""
        return unpack_bits(self.codes, self.size, self.bits)

    def to_dense(self):
        return self.table[self.code_array()].reshape(self.shape)

    def value_bits(self):
        return self.bits

    def magnitude(self):
        """|W|: the negative codes mapped onto the positive ones (the structure is the codes)."""
        m = exponents_per_sign(self.bits)
        codes = self.code_array()
        codes = np.where(codes > m, codes - m, codes)
        return Pow2Weight(self.shape, pack_bits(codes, self.bits), self.n1, self.bits, self.dtype)

    def reduce_dense_grad(self, dweight):
        return {}  # nothing trainable

    def stored_nbytes(self):
        return {"codes": self.codes.nbytes, "header": HEADER_BYTES + 2}  # + bits, n1


class INQLatentWeight(WeightFormat):
    kind = "inq_latent"
    array_names = ("weight", "frozen")
    creation_options = ("bits",)
    trainable = ("weight",)
    decay = ()  # weight decay would move the frozen weights
    dense_view = True  # the dense kernels run on ``weight``; only the gradient is masked

    def __init__(self, weight, frozen, n1, bits, *, at="inq_latent"):
        super().__init__(weight.shape, weight.dtype)
        self.n1, self.bits = check_exponents(n1, bits, at)
        self.weight, self.frozen = weight, frozen
        if frozen.shape != (self.size,) or frozen.dtype != np.uint8 or frozen.max(initial=0) > 1:
            raise ValueError(f"{at}: frozen must be {self.size} uint8 flags 0/1, got "
                             f"{frozen.dtype} {frozen.shape}")
        held = self.weight.reshape(-1)[frozen == 1]
        table = value_table(self.n1, self.bits, np.float64)
        if not np.array_equal(table[quantize_codes(held, self.n1, self.bits)], held):
            raise ValueError(f"{at}: a frozen weight is not one of its layer's powers of two")

    @classmethod
    def from_dense(cls, weight, bits=5, *, dtype=None, at="inq_latent"):
        """INQ's start: nothing frozen yet, n1 from the trained weight (eq. 3)."""
        weight = np.asarray(weight)
        w = np.array(weight, dtype=dtype or weight.dtype, order="C")
        return cls(w, np.zeros(w.size, np.uint8), top_exponent(weight), bits, at=at)

    @classmethod
    def from_arrays(cls, shape, arrays, options, *, dtype=np.float32, at="inq_latent"):
        values = check_weight(arrays["weight"], shape, at, dtype)
        frozen = check_structure_array(np.asarray(arrays["frozen"]), "frozen", at)
        for key in ("bits", "n1"):
            if key not in options:
                raise ValueError(f"{at}: the inq_latent format's option {key!r} is missing")
        return cls(values, frozen.astype(np.uint8) if frozen.max(initial=0) <= 1 else frozen,
                   options["n1"], options["bits"], at=at)

    def arrays(self):
        return {"weight": self.weight, "frozen": self.frozen}

    def options(self):
        return {"bits": self.bits, "n1": self.n1}

    def operand(self):
        return DenseArrays(self.weight.reshape(self.rows, self.cols))

    def to_dense(self):
        return self.weight.copy()

    def frozen_share(self):
        return float(self.frozen.mean()) if self.size else 1.0

    def freeze(self, portion):
        """INQ's partition and group-wise quantization: quantize (eq. 2) and freeze the
        largest-magnitude weights not frozen yet until ``portion`` of the layer is frozen (the
        paper's pruning-inspired rule: larger weights matter more) → a new ``inq_latent``."""
        if not 0 <= portion <= 1:
            raise ValueError(f"INQ portion must be in [0, 1], got {portion!r}")
        flat = self.weight.reshape(-1).copy()
        frozen = self.frozen.copy()
        more = int(round(portion * self.size)) - int(frozen.sum())
        if more > 0:
            free = np.flatnonzero(frozen == 0)
            pick = free[np.argsort(-np.abs(flat[free]), kind="stable")[:more]]
            table = value_table(self.n1, self.bits, np.float64)
            flat[pick] = table[quantize_codes(flat[pick], self.n1, self.bits)]
            frozen[pick] = 1
        return INQLatentWeight(flat.reshape(self.shape), frozen, self.n1, self.bits)

    def pow2(self):
        """Every weight quantized (the last step, 100 %) in the ``pow2`` format."""
        return Pow2Weight.from_dense(self.weight, self.bits, n1=self.n1)

    def reduce_dense_grad(self, dweight):
        """{"weight": dL/dW with the frozen entries' zeroed}."""
        mask = (self.frozen == 0).reshape(self.shape)
        return {"weight": np.where(mask, dweight, 0).astype(self.dtype)}

    def stored_nbytes(self):
        return {"values": self.weight.size * 4, "frozen": self.frozen.nbytes,
                "header": HEADER_BYTES + 2}
