"""Ternary weights (Trained Ternary Quantization: Zhu, Han, Mao & Dally, ICLR 2017) and the latent
weights TTQ trains them from.

``ternary``: each weight is +wp, 0 or −wn, with one learned positive and one learned negative
scale per layer, as 2-bit codes packed four to a byte (LSB first):

    W.flat[i] = wp if code[i] = 1,  −wn if code[i] = 2,  0 if code[i] = 0   (code 3 unused)

Its forward kernel adds and subtracts (``engine/quantized.py``): y = wp·Σ_{+} x − wn·Σ_{−} x + b.
The backward decodes rows for BLAS; the trainable values are the two scales:

    dL/dwp = Σ_{i : code = 1} dL/dW_i,    dL/dwn = −Σ_{i : code = 2} dL/dW_i

(the paper's eq. 7 with W^n the negative level; here wn is its magnitude, hence the sign).

``ttq_latent``: what TTQ trains — latent full-precision weights w̃ and the two scales. Its weight
is their ternarization with the threshold Δ = t · max|w̃| (t = 0.05, the paper's):

    W_i = wp if w̃_i > Δ,  −wn if w̃_i < −Δ,  0 otherwise

with the scales' gradients as above and the latent weights' as the paper's eq. 8 (a scaled
straight-through estimate):

    dL/dw̃_i = wp · dL/dW_i if w̃_i > Δ,  1 · dL/dW_i if |w̃_i| ≤ Δ,  wn · dL/dW_i if w̃_i < −Δ

``ternary()`` gives the trained layer's ternary weight.
"""

import copy
from collections import namedtuple

import numpy as np
from numba import njit

from .._jit import JIT
from .base import (WeightFormat, check_bytes, check_values, check_weight, pack_bits, packed_nbytes,
                   register_block_decoder, unpack_bits)
from .dense import HEADER_BYTES

TernaryArrays = namedtuple("TernaryArrays", "codes wp wn ncols")
TTQLatentArrays = namedtuple("TTQLatentArrays", "w2 delta wp wn")

THRESHOLD = 0.05  # t of Δ = t · max|w̃| (Zhu et al. 2017, §3)


@njit(**JIT)
def ternary_rows(W, lo, hi, scratch):
    # scratch: (≥ hi − lo, K) → rows lo..hi: +wp, −wn or 0 by each weight's 2-bit code
    K = W.ncols
    out = scratch[:hi - lo]
    flat = out.reshape(-1)
    start = lo * K
    for i in range(flat.shape[0]):
        j = start + i
        c = (np.int64(W.codes[j >> 2]) >> ((j & 3) << 1)) & 3
        flat[i] = W.wp if c == 1 else (-W.wn if c == 2 else 0.0)
    return out


@njit(**JIT)
def ttq_latent_rows(W, lo, hi, scratch):
    # scratch: (≥ hi − lo, K) → rows lo..hi of the ternarized latent weight (threshold delta)
    out = scratch[:hi - lo]
    for r in range(hi - lo):
        src = W.w2[lo + r]
        dst = out[r]
        for j in range(src.shape[0]):
            v = src[j]
            dst[j] = W.wp if v > W.delta else (-W.wn if v < -W.delta else 0.0)
    return out


register_block_decoder(TernaryArrays, ternary_rows)
register_block_decoder(TTQLatentArrays, ttq_latent_rows)


def ternary_codes(weight, delta):
    """Codes 1 (> delta), 2 (< −delta), 0 (between) of a weight array, flattened."""
    w = np.asarray(weight).reshape(-1)
    return np.where(w > delta, 1, np.where(w < -delta, 2, 0)).astype(np.uint8)


def check_scales(scales, at, dtype):
    """The two non-negative scales (wp, wn)."""
    scales = check_values(scales, "scales", at, dtype)
    if scales.shape != (2,) or (scales < 0).any():
        raise ValueError(f"{at}: scales must be the two magnitudes (wp, wn) >= 0, got {scales}")
    return scales


class TernaryWeight(WeightFormat):
    kind = "ternary"
    array_names = ("codes", "scales")
    creation_options = ()
    trainable = ("scales",)
    decay = ()

    def __init__(self, shape, codes, scales, *, at="ternary"):
        super().__init__(shape, scales.dtype)
        self.codes, self.scales = codes, scales
        self._validate(at)

    def _validate(self, at):
        need = packed_nbytes(self.size, 2)
        if self.codes.dtype != np.uint8 or self.codes.shape != (need,):
            raise ValueError(f"{at}: packed codes must be {need} uint8 bytes for {self.size} "
                             f"2-bit codes, got {self.codes.dtype} {self.codes.shape}")
        if self.size and unpack_bits(self.codes, self.size, 2).max() > 2:
            raise ValueError(f"{at}: a ternary code is 3; codes are 0 (zero), 1 (+wp), 2 (−wn)")
        if self.size % 4 and self.codes[-1] >> (2 * (self.size % 4)):
            raise ValueError(f"{at}: the padding bits after the last code are not zero")
        if self.scales.shape != (2,) or (self.scales < 0).any():
            raise ValueError(f"{at}: scales must be the two magnitudes (wp, wn) >= 0")

    @classmethod
    def from_dense(cls, weight, *, threshold=THRESHOLD, dtype=None, at="ternary"):
        """Ternarize ``weight`` with Δ = threshold · max|W| and the scales that fit it best
        (the mean magnitude of each side; lossy unless the weight is already ternary)."""
        weight = np.asarray(weight)
        codes = ternary_codes(weight, threshold * float(np.abs(weight).max(initial=0.0)))
        w = weight.reshape(-1).astype(np.float64)
        wp = float(w[codes == 1].mean()) if (codes == 1).any() else 0.0
        wn = float(-w[codes == 2].mean()) if (codes == 2).any() else 0.0
        return cls(weight.shape, pack_bits(codes, 2), np.array([wp, wn], dtype or weight.dtype),
                   at=at)

    @classmethod
    def from_arrays(cls, shape, arrays, options=None, *, dtype=np.float32, at="ternary"):
        return cls(shape, check_bytes(arrays["codes"], "codes", at),
                   check_scales(arrays["scales"], at, dtype), at=at)

    def arrays(self):
        return {"codes": self.codes, "scales": self.scales}

    def operand(self):
        return TernaryArrays(self.codes, self.scales[0], self.scales[1], self.cols)

    def code_array(self):
        """The unpacked codes, (O·K,) uint8."""
        return unpack_bits(self.codes, self.size, 2)

    def to_dense(self):
        table = np.array([0.0, self.scales[0], -self.scales[1]], dtype=self.dtype)
        return table[self.code_array()].reshape(self.shape)

    def nnz(self):
        codes = self.code_array()
        return int(((codes == 1) & (self.scales[0] != 0)).sum()
                   + ((codes == 2) & (self.scales[1] != 0)).sum())

    def value_bits(self):
        return 2

    def reduce_dense_grad(self, dweight):
        """{"scales": (Σ_{+} dL/dW, −Σ_{−} dL/dW)}."""
        codes, d = self.code_array(), dweight.reshape(-1)
        return {"scales": np.array([d[codes == 1].sum(), -d[codes == 2].sum()], dtype=self.dtype)}

    def magnitude(self):
        """|W|: wp on code 1, wn on code 2. Code 2 decodes as −scales[1], so |W| holds −wn
        there (a weight for the kernels only, never stored: stored scales are ≥ 0)."""
        return _flipped_negative_scale(self)

    def magnitude_grads(self, grads):
        return {"scales": grads["scales"] * _FLIP.astype(grads["scales"].dtype)}

    def stored_nbytes(self):
        return {"codes": self.codes.nbytes, "scales": 8, "header": HEADER_BYTES}


class TTQLatentWeight(WeightFormat):
    kind = "ttq_latent"
    array_names = ("weight", "scales")
    creation_options = ("threshold",)
    trainable = ("weight", "scales")
    decay = ("weight",)

    def __init__(self, weight, scales, threshold=THRESHOLD, *, at="ttq_latent"):
        super().__init__(weight.shape, weight.dtype)
        self.weight, self.scales, self.threshold = weight, scales, float(threshold)
        if not 0 <= self.threshold < 1:
            raise ValueError(f"{at}: threshold must be in [0, 1), got {threshold!r}")
        if self.scales.shape != (2,) or (self.scales < 0).any():
            raise ValueError(f"{at}: scales must be the two magnitudes (wp, wn) >= 0")

    @classmethod
    def from_dense(cls, weight, *, threshold=THRESHOLD, dtype=None, at="ttq_latent"):
        """TTQ's start from a trained weight: latent weights normalized to [−1, 1] (divided by
        max|W|), scales the mean magnitude of each side of the threshold in the weight's own
        units (so the ternary weight starts as the best one of that partition)."""
        weight = np.asarray(weight)
        dtype = dtype or weight.dtype
        top = float(np.abs(weight).max(initial=0.0)) or 1.0
        start = TernaryWeight.from_dense(weight, threshold=threshold, dtype=dtype, at=at)
        return cls(np.array(weight / top, dtype=dtype), start.scales, threshold, at=at)

    @classmethod
    def from_arrays(cls, shape, arrays, options, *, dtype=np.float32, at="ttq_latent"):
        values = check_weight(arrays["weight"], shape, at, dtype)
        return cls(values, check_scales(arrays["scales"], at, dtype),
                   options.get("threshold", THRESHOLD), at=at)

    def arrays(self):
        return {"weight": self.weight, "scales": self.scales}

    def options(self):
        return {"threshold": self.threshold}

    def delta(self):
        """Δ = t · max|w̃|."""
        return self.threshold * float(np.abs(self.weight).max(initial=0.0))

    def codes(self):
        return ternary_codes(self.weight, self.delta())

    def operand(self):
        return TTQLatentArrays(self.weight.reshape(self.rows, self.cols), self.delta(),
                               self.scales[0], self.scales[1])

    def to_dense(self):
        table = np.array([0.0, self.scales[0], -self.scales[1]], dtype=self.dtype)
        return table[self.codes()].reshape(self.shape)

    def ternary(self):
        """The trained ternary weight (2-bit codes and the two scales)."""
        return TernaryWeight(self.shape, pack_bits(self.codes(), 2), self.scales.copy())

    def value_bits(self):
        return 32

    def reduce_dense_grad(self, dweight):
        """The scales' gradients (eq. 7) and the latent weights' (eq. 8), module docstring."""
        codes, d = self.codes(), dweight.reshape(-1)
        wp, wn = self.scales
        factor = np.where(codes == 1, wp, np.where(codes == 2, wn, 1.0))
        return {"weight": (factor * d).astype(self.dtype).reshape(self.shape),
                "scales": np.array([d[codes == 1].sum(), -d[codes == 2].sum()], dtype=self.dtype)}

    def magnitude(self):
        """|W| as TernaryWeight.magnitude: the negative scale flipped, the latent weights shared."""
        return _flipped_negative_scale(self)

    def magnitude_grads(self, grads):
        # |W| = sign(W)·W: the flipped scale already turns eq. 8's factor to −wn where W = −wn;
        # between the thresholds (W ≈ w̃ for the estimate, |W| ≈ |w̃|) the sign is w̃'s.
        sign = np.where(self.codes() == 0, np.sign(self.weight.reshape(-1)), 1.0)
        return {"weight": (sign.reshape(self.shape) * grads["weight"]).astype(self.dtype),
                "scales": grads["scales"] * _FLIP.astype(grads["scales"].dtype)}

    def stored_nbytes(self):
        return {"values": self.weight.size * 4, "scales": 8, "header": HEADER_BYTES}


_FLIP = np.array([1.0, -1.0])  # (wp, wn) → (wp, −wn)


def _flipped_negative_scale(weight):
    """A shallow copy of a ternary or TTQ-latent weight with scales (wp, −wn): code 2, decoded
    as −scales[1], then gives +wn, so the copy is |W| and the kernels add where they subtracted."""
    out = copy.copy(weight)
    out.scales = weight.scales * _FLIP.astype(weight.scales.dtype)
    return out
