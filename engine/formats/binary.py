"""Binary weights with one scale per output channel (BinaryConnect: Courbariaux, Bengio & David,
NeurIPS 2015; the scaling of XNOR-Net: Rastegari et al., ECCV 2016; Hubara et al., "Quantized
Neural Networks", JMLR 2018), and the latent weights they are trained from.

``binary``: each weight is ±alpha[o], its sign one bit. Each output row's K sign bits are packed
64 to a uint64 word (bit k % 64 of word k // 64, LSB first; 1 = +, 0 = −; the padding bits after
bit K − 1 of a row are zero), ⌈K / 64⌉ words a row:

    W[o, k] = alpha[o] · (+1 if bit k of row o is set, else −1)

Its forward kernels (``engine/binary.py``) add and subtract inputs by sign and scale once per
output; on ±1 inputs (a binary ``QuantizeActivation`` in front) the product is an XNOR and a
popcount per 64 weights. The backward decodes rows for BLAS; the trainable values are the
scales:  dL/dalpha[o] = Σ_k dL/dW[o, k] · sign(W[o, k]).

``binary_latent``: what training updates — latent full-precision weights w̃, whose forward
weight is their sign scaled by their mean magnitude per output channel (XNOR-Net's optimal
alpha) and by a fixed ``gain`` (the step of a k-bit activation quantizer in front, whose codes
the layer receives; 1 otherwise):

    W[o, k] = gain · alpha[o] · sign(w̃[o, k]),   alpha[o] = (1/K) Σ_k |w̃[o, k]|   (sign(0) = +1)

Its gradient is XNOR-Net's (their eq. 7, Hubara et al.'s straight-through estimate of the sign,
cancelled where |w̃| > 1, plus the exact gradient through alpha):

    dL/dw̃[o, j] = gain · (alpha[o] · 1{|w̃[o, j]| ≤ 1} · dL/dW[o, j]
                          + sign(w̃[o, j]) / K · Σ_k sign(w̃[o, k]) · dL/dW[o, k])

``binary()`` gives the trained layer's binary weight.
"""

from collections import namedtuple

import numpy as np
from numba import njit

from .._jit import JIT
from .base import (WeightFormat, check_structure_array, check_values, check_weight,
                   register_block_decoder)
from .dense import HEADER_BYTES

BinaryArrays = namedtuple("BinaryArrays", "words scales ncols")
BinaryLatentArrays = namedtuple("BinaryLatentArrays", "w2 scales")

WORD_BITS = 64


def words_per_row(K):
    """uint64 words of one output row's K sign bits."""
    return (int(K) + WORD_BITS - 1) // WORD_BITS


@njit(**JIT)
def binary_rows(W, lo, hi, scratch):
    # scratch: (≥ hi − lo, K) → rows lo..hi: scratch[r, k] = ±scales[lo + r] by bit k of the row
    K = W.ncols
    out = scratch[:hi - lo]
    one = np.uint64(1)
    for r in range(hi - lo):
        words = W.words[lo + r]
        s = W.scales[lo + r]
        dst = out[r]
        for k in range(K):
            bit = (words[k >> 6] >> np.uint64(k & 63)) & one
            dst[k] = s if bit else -s
    return out


@njit(**JIT)
def binary_latent_rows(W, lo, hi, scratch):
    # scratch: (≥ hi − lo, K) → rows lo..hi: scratch[r, k] = scales[lo + r] · sign(w2[lo + r, k])
    out = scratch[:hi - lo]
    for r in range(hi - lo):
        src = W.w2[lo + r]
        s = W.scales[lo + r]
        dst = out[r]
        for k in range(src.shape[0]):
            dst[k] = s if src[k] >= 0 else -s
    return out


register_block_decoder(BinaryArrays, binary_rows)
register_block_decoder(BinaryLatentArrays, binary_latent_rows)


def pack_signs(positive):
    """(O, K) bools (True = +) → (O, ⌈K/64⌉) uint64 words, bit k % 64 of word k // 64 (LSB
    first), zero padding."""
    positive = np.asarray(positive, dtype=bool)
    O, K = positive.shape
    padded = np.zeros((O, words_per_row(K) * WORD_BITS), dtype=bool)
    padded[:, :K] = positive
    packed = np.packbits(padded, axis=1, bitorder="little")  # (O, 8 bytes per word)
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64)


def unpack_signs(words, K):
    """Inverse of ``pack_signs`` → (O, K) bools (True = +)."""
    words = np.ascontiguousarray(words, dtype=np.uint64).astype("<u8")
    bits = np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")
    return bits[:, :K].astype(bool)


def mean_magnitudes(weight):
    """alpha[o] = mean_k |W[o, k]| per output channel, float64 (XNOR-Net's optimal scale)."""
    w = np.asarray(weight, dtype=np.float64)
    return np.abs(w.reshape(len(w), -1)).mean(axis=1) if w.size else np.zeros(len(w))


class BinaryWeight(WeightFormat):
    kind = "binary"
    array_names = ("words", "scales")
    creation_options = ()
    trainable = ("scales",)
    decay = ()

    def __init__(self, shape, words, scales, *, at="binary"):
        super().__init__(shape, scales.dtype)
        self.words, self.scales = words, scales
        self._validate(at)

    def _validate(self, at):
        need = (self.rows, words_per_row(self.cols))
        if self.words.dtype != np.uint64 or self.words.shape != need:
            raise ValueError(f"{at}: sign words must be {need[0]} x {need[1]} uint64 (64 sign "
                             f"bits a word, per output row of {self.cols}), got "
                             f"{self.words.dtype} {self.words.shape}")
        tail = self.cols % WORD_BITS
        if tail and self.words.size and (self.words[:, -1] >> np.uint64(tail)).any():
            raise ValueError(f"{at}: the padding bits after a row's last sign bit are not zero")
        if self.scales.shape != (self.rows,):
            raise ValueError(f"{at}: scales must hold one value per output channel ({self.rows}), "
                             f"got shape {self.scales.shape}")

    @classmethod
    def from_dense(cls, weight, *, dtype=None, at="binary"):
        """Signs of ``weight`` (+ at 0) scaled by each channel's mean magnitude (the closest
        binary weight in L2, XNOR-Net's eq. 2; lossy unless the weight is already ±alpha[o])."""
        weight = np.asarray(weight)
        rows = weight.reshape(len(weight), -1)
        return cls(weight.shape, pack_signs(rows >= 0),
                   mean_magnitudes(weight).astype(dtype or weight.dtype), at=at)

    @classmethod
    def from_arrays(cls, shape, arrays, options=None, *, dtype=np.float32, at="binary"):
        words = check_structure_array(np.asarray(arrays["words"]), "words", at, ndim=2)
        if words.size and words.dtype.kind == "i" and words.min() < 0:
            raise ValueError(f"{at}: words holds negative values; they must be uint64 bit words")
        return cls(shape, words.astype(np.uint64), check_values(arrays["scales"], "scales", at,
                                                                 dtype), at=at)

    def arrays(self):
        return {"words": self.words, "scales": self.scales}

    def operand(self):
        return BinaryArrays(self.words, self.scales, self.cols)

    def signs(self):
        """(O, K) ±1 float64."""
        return np.where(unpack_signs(self.words, self.cols), 1.0, -1.0)

    def to_dense(self):
        return (self.scales[:, None] * self.signs().astype(self.dtype)).reshape(self.shape)

    def nnz(self):
        return int(self.cols * np.count_nonzero(self.scales))

    def value_bits(self):
        return 1

    def magnitude(self):
        """|W| = |alpha[o]| everywhere: every sign bit set, the scales' magnitudes."""
        words = pack_signs(np.ones((self.rows, self.cols), dtype=bool))
        return BinaryWeight(self.shape, words, np.abs(self.scales))

    def reduce_dense_grad(self, dweight):
        """{"scales": Σ_k dL/dW[o, k] · sign(W[o, k])}."""
        d = dweight.reshape(self.rows, self.cols)
        return {"scales": np.einsum("ok,ok->o", d, self.signs(),
                                    dtype=np.float64).astype(self.dtype)}

    def stored_nbytes(self):
        return {"signs": self.words.nbytes, "scales": self.scales.size * 4, "header": HEADER_BYTES}


class BinaryLatentWeight(WeightFormat):
    kind = "binary_latent"
    array_names = ("weight",)
    creation_options = ("gain",)
    trainable = ("weight",)
    decay = ()  # the sign ignores magnitudes; decay would only shrink alpha

    def __init__(self, weight, gain=1.0, *, at="binary_latent"):
        super().__init__(weight.shape, weight.dtype)
        self.weight = weight
        try:
            self.gain = float(gain)
        except (TypeError, ValueError):
            self.gain = float("nan")
        if not (np.isfinite(self.gain) and self.gain > 0):
            raise ValueError(f"{at}: gain must be finite and > 0, got {gain!r}")

    @classmethod
    def from_dense(cls, weight, *, gain=1.0, dtype=None, at="binary_latent"):
        """Latent weights W / gain: the binary weight starts as ``BinaryWeight.from_dense(W)``."""
        weight = np.asarray(weight)
        gain = float(gain)
        return cls(np.array(weight / gain if gain > 0 else weight, dtype=dtype or weight.dtype),
                   gain, at=at)

    @classmethod
    def from_arrays(cls, shape, arrays, options, *, dtype=np.float32, at="binary_latent"):
        return cls(check_weight(arrays["weight"], shape, at, dtype), options.get("gain", 1.0),
                   at=at)

    def arrays(self):
        return {"weight": self.weight}

    def options(self):
        return {"gain": self.gain}

    def scales(self):
        """gain · alpha[o], alpha[o] = mean_k |w̃[o, k]|, in the weight's dtype."""
        return (self.gain * mean_magnitudes(self.weight)).astype(self.dtype)

    def operand(self):
        return BinaryLatentArrays(self.weight.reshape(self.rows, self.cols), self.scales())

    def to_dense(self):
        rows = self.weight.reshape(self.rows, self.cols)
        return (self.scales()[:, None] * np.where(rows >= 0, 1, -1).astype(self.dtype)
                ).reshape(self.shape)

    def binary(self):
        """The trained binary weight (sign bits and the scales gain · alpha)."""
        rows = self.weight.reshape(self.rows, self.cols)
        return BinaryWeight(self.shape, pack_signs(rows >= 0), self.scales())

    def magnitude(self):
        raise ValueError("binary_latent: |W| of latent weights is not a format of its own; "
                         "convert the layer to binary first")

    def value_bits(self):
        return 32

    def reduce_dense_grad(self, dweight):
        """{"weight": XNOR-Net's gradient (module docstring)}."""
        rows = self.weight.reshape(self.rows, self.cols).astype(np.float64)
        d = dweight.reshape(self.rows, self.cols).astype(np.float64)
        sign = np.where(rows >= 0, 1.0, -1.0)
        alpha = mean_magnitudes(rows)[:, None]
        through_alpha = sign / max(self.cols, 1) * (sign * d).sum(axis=1, keepdims=True)
        g = self.gain * (alpha * (np.abs(rows) <= 1) * d + through_alpha)
        return {"weight": g.astype(self.dtype).reshape(self.shape)}

    def stored_nbytes(self):
        return {"values": self.weight.size * 4, "header": HEADER_BYTES + 4}
