"""Dense weights: the plain (O, …) array, as every layer starts."""

import numpy as np

from .base import VALUE_BYTES, WeightFormat, check_weight

HEADER_BYTES = 8  # kind, rank, and room for the shape in a model file's layer record


class DenseWeight(WeightFormat):
    """The weight array itself; kernels use BLAS on it (see conv.py, linear.py)."""

    kind = "dense"
    array_names = ("weight",)
    creation_options = ()  # the options from_dense takes
    trainable = ("weight",)
    decay = ("weight",)
    dense_view = True

    def __init__(self, weight):
        super().__init__(weight.shape, weight.dtype)
        self.weight = weight

    @classmethod
    def from_dense(cls, weight, *, dtype=None, at="dense"):
        weight = np.asarray(weight)
        return cls(np.array(weight, dtype=dtype or weight.dtype, order="C"))

    @classmethod
    def from_arrays(cls, shape, arrays, options=None, *, dtype=np.float32, at="dense"):
        return cls(check_weight(arrays["weight"], shape, at, dtype))

    def arrays(self):
        return {"weight": self.weight}

    def to_dense(self):
        return self.weight.copy()

    def reduce_dense_grad(self, dweight):
        return {"weight": dweight}

    def stored_nbytes(self):
        return {"values": self.weight.size * VALUE_BYTES, "header": HEADER_BYTES}

    def operand(self):
        from .base import DenseArrays

        return DenseArrays(self.weight.reshape(self.rows, self.cols))
