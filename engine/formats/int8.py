"""8-bit linear quantization (Vanhoucke, Senior & Mao, "Improving the speed of neural networks on
CPUs", 2011): symmetric int8 codes with one float scale per output channel.

    W[o, k] = scales[o] · codes[o, k],   codes ∈ −127..127 (int8; −128 unused: symmetric)

The forward pass on 8-bit integer inputs (a ``QuantizeActivation`` layer's codes) is an integer
product with int32 sums, scaled once per output (``engine/quantized.py``); any other input, and
every backward pass, decodes rows lo..hi into a scratch block for BLAS. Training (or an attack's
gradient) sees the dequantized weight; the trainable values are the scales:

    dL/dscales[o] = Σ_k dL/dW[o, k] · codes[o, k]
"""

from collections import namedtuple

import numpy as np
from numba import njit

from .._jit import JIT
from .base import WeightFormat, check_structure_array, check_values, register_block_decoder
from .dense import HEADER_BYTES

Int8Arrays = namedtuple("Int8Arrays", "codes scales ncols")

CODE_MAX = 127  # symmetric range: codes −127..127


@njit(**JIT)
def int8_rows(W, lo, hi, scratch):
    # scratch: (≥ hi − lo, K) → rows lo..hi decoded: scratch[r, j] = scales[lo + r] · codes[lo + r, j]
    K = W.ncols
    out = scratch[:hi - lo]
    for r in range(hi - lo):
        s = W.scales[lo + r]
        src = W.codes[(lo + r) * K:(lo + r + 1) * K]
        dst = out[r]
        for j in range(K):
            dst[j] = s * src[j]
    return out


register_block_decoder(Int8Arrays, int8_rows)


def channel_scales(weight):
    """Per-output-channel scales max|W[o]| / 127 (1.0 for an all-zero row, whose codes are 0)."""
    rows = np.abs(np.asarray(weight, dtype=np.float64)).reshape(len(weight), -1)
    top = rows.max(axis=1, initial=0.0)
    return np.where(top > 0, top / CODE_MAX, 1.0)


class Int8Weight(WeightFormat):
    kind = "int8"
    array_names = ("codes", "scales")
    creation_options = ()
    trainable = ("scales",)
    decay = ()

    def __init__(self, shape, codes, scales, *, at="int8"):
        super().__init__(shape, scales.dtype)
        self.codes, self.scales = codes, scales
        self._validate(at)
        # The codes move into a buffer 15 bytes longer than they are: the integer kernel's
        # vector tile reads each row's last 16-value block whole (the activations it multiplies
        # there are zero), also past the last row.
        self._buffer = np.zeros(self.size + 15, dtype=np.int8)
        self._buffer[:self.size] = codes
        self.codes = self._buffer[:self.size]

    def _validate(self, at):
        if self.codes.dtype != np.int8 or self.codes.shape != (self.size,):
            raise ValueError(f"{at}: codes must be {self.size} int8 values for shape {self.shape}, "
                             f"got {self.codes.dtype} {self.codes.shape}")
        if self.size and np.abs(self.codes.astype(np.int16)).max() > CODE_MAX:
            raise ValueError(f"{at}: a code is -128; int8 codes are symmetric, -127..127")
        if self.scales.shape != (self.rows,):
            raise ValueError(f"{at}: scales must hold one value per output channel ({self.rows}), "
                             f"got shape {self.scales.shape}")

    @classmethod
    def from_dense(cls, weight, *, scales=None, dtype=None, at="int8"):
        """Codes round(W[o] / scales[o]) clipped to ±127; default scales ``channel_scales``
        (the largest weight of each channel maps to ±127) — lossy, within half a step."""
        weight = np.asarray(weight)
        dtype = dtype or weight.dtype
        scales = channel_scales(weight) if scales is None else np.asarray(scales, np.float64)
        if scales.shape != (weight.shape[0],) or not (np.isfinite(scales).all() and (scales > 0).all()):
            raise ValueError(f"{at}: scales must be {weight.shape[0]} finite positive values")
        rows = np.asarray(weight, np.float64).reshape(weight.shape[0], -1)
        codes = np.clip(np.floor(rows / scales[:, None] + 0.5), -CODE_MAX, CODE_MAX)
        return cls(weight.shape, codes.astype(np.int8).reshape(-1), scales.astype(dtype), at=at)

    @classmethod
    def from_arrays(cls, shape, arrays, options=None, *, dtype=np.float32, at="int8"):
        codes = check_structure_array(np.asarray(arrays["codes"]), "codes", at)
        if codes.size and (codes.min() < -CODE_MAX or codes.max() > CODE_MAX):
            raise ValueError(f"{at}: codes must lie in -127..127, found {codes.min()}..{codes.max()}")
        scales = check_values(arrays["scales"], "scales", at, dtype)
        return cls(shape, codes.astype(np.int8), scales, at=at)

    def arrays(self):
        return {"codes": self.codes, "scales": self.scales}

    def operand(self):
        return Int8Arrays(self.codes, self.scales, self.cols)

    def kernel_codes(self):
        """The codes as an (O, K) matrix whose buffer extends 15 bytes past it (see __init__)."""
        return self.codes.reshape(self.rows, self.cols)

    def to_dense(self):
        return (self.scales[:, None] * self.codes.reshape(self.rows, self.cols)).reshape(self.shape)

    def magnitude(self):
        """|W| = |scales[o]| · |codes| (codes are −127..127, so |codes| fits int8); new codes in
        a buffer of their own (the kernel reads past each row), the scales' gradient sign(s)·g."""
        return Int8Weight(self.shape, np.abs(self.codes), np.abs(self.scales))

    def nnz(self):
        return int(np.count_nonzero(self.codes))

    def value_bits(self):
        return 8

    def reduce_dense_grad(self, dweight):
        """{"scales": Σ_k dL/dW[o, k] · codes[o, k]}."""
        d = dweight.reshape(self.rows, self.cols)
        return {"scales": np.einsum("ok,ok->o", d, self.codes.reshape(self.rows, self.cols),
                                    dtype=np.float64).astype(self.dtype)}

    def stored_nbytes(self):
        return {"codes": self.codes.nbytes, "scales": self.scales.size * 4, "header": HEADER_BYTES}
