"""CSR weights: a pruned weight's non-zeros, row by row, with scipy.sparse's names.

A weight (O, C/groups, kh, kw) or (O, I) is stored as O rows over its flattened receptive field:

    data[k], indices[k]   value and column of non-zero k; row o holds k ∈ [indptr[o], indptr[o+1])

Columns are sorted and unique within a row. Index dtypes are int32 where they fit and int64
where they do not (``index_dtype``); arrays given with wider types are kept, never narrowed.
Training updates ``data`` only, so pruned positions stay exactly zero.
"""

from collections import namedtuple

import numpy as np
from numba import njit

from .._jit import JIT, index_dtype
from .._loops import sparse_dot
from .base import (VALUE_BYTES, WeightFormat, check_structure_array, check_values,
                   register_row_decoder, register_row_direct)
from .dense import HEADER_BYTES

CSRArrays = namedtuple("CSRArrays", "data indices indptr")


@njit(**JIT)
def csr_row_entries(W, o, cols, vals, slots, need_slots):
    # Row o: entries k ∈ [indptr[o], indptr[o+1]), as views of indices and data (no copy);
    # slot = k (each value is its own slot), written only when asked for.
    a = W.indptr[o]
    b = W.indptr[o + 1]
    if need_slots:
        for e in range(b - a):
            slots[e] = a + e
        return W.indices[a:b], W.data[a:b], slots[:b - a], b - a
    return W.indices[a:b], W.data[a:b], slots[:0], b - a


register_row_decoder(CSRArrays, csr_row_entries)


@njit(**JIT)
def csr_row_dot(W, o, x):
    # x: (K,) → Σ_{k ∈ [indptr[o], indptr[o+1])} data[k] · x[indices[k]]
    a = W.indptr[o]
    b = W.indptr[o + 1]
    return sparse_dot(W.indices[a:b], W.data[a:b], x, b - a)


@njit(**JIT)
def csr_row_dot_backward(W, o, g, x, need_input, need_weight, dx, ddata):
    # x, dx: (K,); ddata: (nnz,), accumulated into
    # dx[indices[k]] += g · data[k];   ddata[k] += g · x[indices[k]]   for k in row o
    for k in range(W.indptr[o], W.indptr[o + 1]):
        if need_input:
            dx[W.indices[k]] += g * W.data[k]
        if need_weight:
            ddata[k] += g * x[W.indices[k]]


register_row_direct(CSRArrays, csr_row_dot, csr_row_dot_backward)


class CSRWeight(WeightFormat):
    kind = "csr"
    sparse = True
    array_names = ("data", "indices", "indptr")
    creation_options = ()  # the options from_dense takes
    trainable = ("data",)
    decay = ("data",)

    def __init__(self, shape, data, indices, indptr, *, at="csr"):
        super().__init__(shape, data.dtype)
        self.data, self.indices, self.indptr = data, indices, indptr
        self._validate(at)

    def _validate(self, at):
        O, K = self.rows, self.cols
        if self.indptr.shape != (O + 1,):
            raise ValueError(f"{at}: indptr has {self.indptr.size} entries, expected rows + 1 = {O + 1}")
        if self.indptr[0] != 0 or (np.diff(self.indptr) < 0).any():
            raise ValueError(f"{at}: indptr must start at 0 and never decrease")
        nnz = int(self.indptr[-1])
        if self.indices.size != nnz or self.data.size != nnz:
            raise ValueError(f"{at}: indptr ends at {nnz} but there are {self.indices.size} indices "
                             f"and {self.data.size} values")
        if nnz and (self.indices.min() < 0 or self.indices.max() >= K):
            raise ValueError(f"{at}: a column index lies outside [0, {K})")
        if nnz > 1:
            row_of = np.repeat(np.arange(O), np.diff(self.indptr))
            same_row = row_of[1:] == row_of[:-1]
            if (np.diff(self.indices.astype(np.int64))[same_row] <= 0).any():
                raise ValueError(f"{at}: column indices must increase within each row")

    @classmethod
    def from_dense(cls, weight, *, dtype=None, at="csr"):
        weight = np.asarray(weight)
        rows = weight.reshape(weight.shape[0], -1)
        mask = rows != 0
        nnz = int(mask.sum())
        indptr = np.zeros(rows.shape[0] + 1, dtype=index_dtype(nnz))
        np.cumsum(mask.sum(axis=1), out=indptr[1:])
        indices = np.nonzero(mask)[1].astype(index_dtype(rows.shape[1]))
        data = np.ascontiguousarray(rows[mask], dtype=dtype or weight.dtype)
        return cls(weight.shape, data, indices, indptr, at=at)

    @classmethod
    def from_arrays(cls, shape, arrays, options=None, *, dtype=np.float32, at="csr"):
        data = check_values(arrays["data"], "data", at, dtype)
        indices = check_structure_array(np.asarray(arrays["indices"]), "indices", at)
        indptr = check_structure_array(np.asarray(arrays["indptr"]), "indptr", at)
        return cls(shape, data, indices, indptr, at=at)

    @classmethod
    def from_scipy(cls, matrix, shape=None, *, dtype=np.float32, at="csr"):
        """From a scipy.sparse matrix (O, K); ``shape`` reshapes the columns, e.g. a conv's
        (O, C/groups, kh, kw). The caller's matrix is left as it was."""
        m = matrix.tocsr(copy=True)
        m.sum_duplicates()
        m.sort_indices()
        shape = tuple(shape or m.shape)
        if shape[0] != m.shape[0] or int(np.prod(shape[1:])) != m.shape[1]:
            raise ValueError(f"{at}: a {m.shape[0]}x{m.shape[1]} matrix cannot hold a weight of "
                             f"shape {shape}")
        return cls(shape, np.asarray(m.data, dtype=dtype), m.indices.copy(), m.indptr.copy(), at=at)

    def to_scipy(self):
        import scipy.sparse

        return scipy.sparse.csr_matrix((self.data, self.indices, self.indptr),
                                       shape=(self.rows, self.cols))

    def arrays(self):
        return {"data": self.data, "indices": self.indices, "indptr": self.indptr}

    def operand(self):
        return CSRArrays(self.data, self.indices, self.indptr)

    def max_row_entries(self):
        return int(np.diff(self.indptr).max(initial=0))

    def nnz(self):
        return int(np.count_nonzero(self.data))

    def stored_entries(self):
        return self.data.size

    def to_dense(self):
        out = np.zeros(self.size, dtype=self.dtype)
        rows = np.repeat(np.arange(self.rows, dtype=np.int64), np.diff(self.indptr))
        out[rows * self.cols + self.indices] = self.data
        return out.reshape(self.shape)

    def slot_grads(self, dvalues):
        """{"data": …} from the kernels' per-slot sums (a slot is a stored value)."""
        return {"data": dvalues}

    def reduce_dense_grad(self, dweight):
        """{"data": dL/dW at the stored positions}: the masked gradient."""
        rows = np.repeat(np.arange(self.rows, dtype=np.int64), np.diff(self.indptr))
        return {"data": dweight.reshape(-1)[rows * self.cols + self.indices].astype(self.dtype)}

    def stored_nbytes(self):
        return {"values": self.data.size * VALUE_BYTES, "indices": self.indices.nbytes,
                "indptr": self.indptr.nbytes, "header": HEADER_BYTES}
