"""Matrix products inside Numba kernels: SciPy's BLAS ``sgemm``/``dgemm`` on strided views.

Numba's ``np.dot`` wants contiguous operands and a fresh output. Convolution needs more: write
a product straight into a slice of the output tensor, accumulate the weight gradient over the
batch (beta = 1), multiply by a transposed operand without copying it. So the kernels call
BLAS's gemm themselves, through ``gemm`` below.

Threads: robustcnn parallelises with Numba's ``prange`` and calls BLAS from inside those loops,
one product per thread. A second thread pool inside BLAS would fight Numba's for the cores, so
importing this module sets the BLAS library behind SciPy (not NumPy's) to one thread.
The number of threads is Numba's: ``NUMBA_NUM_THREADS`` or ``numba.set_num_threads``.

The BLAS functions are registered with LLVM under fixed symbol names, so kernels that call them
are cached by Numba like any other (a raw function address would make them uncachable).
"""

import ctypes

import llvmlite.binding as llvm
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS library that Numba also uses)
from numba import njit, types
from numba.core import config
from numba.extending import get_cython_function_address

from ._jit import JIT

_INT32_MAX = np.iinfo(np.int32).max


def _blas_function(name, nargs):
    """SciPy's BLAS function ``name`` (all ``nargs`` arguments by pointer, no result) as the
    kernels call it: a Numba external function under a fixed LLVM symbol (so the kernels that
    call it stay cacheable) or, with the JIT disabled (``NUMBA_DISABLE_JIT=1``, kernels run as
    plain Python), the same function through ctypes."""
    address = get_cython_function_address("scipy.linalg.cython_blas", name)
    if config.DISABLE_JIT:
        function = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * nargs))(address)
        return lambda *addresses: function(*(int(a) for a in addresses))
    llvm.add_symbol(f"robustcnn_{name}", address)
    # Pointers passed as intp (an address, ``array.ctypes.data``): the same registers in the C
    # calling convention, and one type whatever the array's, so ``blas_gemm`` compiles once.
    return types.ExternalFunction(f"robustcnn_{name}", types.void(*([types.intp] * nargs)))


# void gemm(char *transa, char *transb, int *m, int *n, int *k, T *alpha, T *a, int *lda,
#           T *b, int *ldb, T *beta, T *c, int *ldc)   -- Fortran BLAS, column-major, by pointer
_sgemm = _blas_function("sgemm", 13)
_dgemm = _blas_function("dgemm", 13)

# void gemv(char *trans, int *m, int *n, T *alpha, T *a, int *lda, T *x, int *incx,
#           T *beta, T *y, int *incy)
_sgemv = _blas_function("sgemv", 11)
_dgemv = _blas_function("dgemv", 11)

_NO_TRANSPOSE = ord("N")
_TRANSPOSE = ord("T")


def _limit_blas_threads():
    """One BLAS thread for the library SciPy's cython_blas calls (see the module docstring)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return
    import os

    import scipy

    scipy_dir = os.path.dirname(os.path.dirname(os.path.abspath(scipy.__file__)))
    for lib in ThreadpoolController().lib_controllers:
        if lib.user_api == "blas" and os.path.abspath(lib.filepath).startswith(scipy_dir) \
                and "numpy" not in os.path.basename(os.path.dirname(lib.filepath)):
            lib.set_num_threads(1)


_limit_blas_threads()


@njit(**JIT)
def gemm(a, b, c, transpose_a, transpose_b, alpha, beta):
    """c ← alpha · op(a) · op(b) + beta · c, op(m) = mᵀ if asked; row-major 2-D views.

    a, b, c: same float dtype, each row contiguous (unit column stride); row strides free.
    The caller checks shapes and that every size and stride fits an int32. Pass the flags as
    ``np.bool_`` and alpha, beta as floats: every caller then shares one compiled gemm per
    array layout, and all of them one ``blas_gemm`` (the BLAS call, compiled once).
    """
    # Row-major c = op(a)·op(b) is column-major cᵀ = op(b)ᵀ·op(a)ᵀ: pass b first.
    m = c.shape[0]
    n = c.shape[1]
    k = a.shape[0] if transpose_a else a.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:
        for i in range(m):
            for j in range(n):
                c[i, j] = 0 if beta == 0.0 else beta * c[i, j]
        return
    # a row-major 2-D view with contiguous rows: its row stride is the leading dimension. The
    # scratch arrays that BLAS reads through pointers are made here: a caller keeps its
    # arguments alive through the call (blas_gemm's own arrays could be freed after their last
    # use in Numba's IR, which is before the BLAS call that reads them).
    blas_gemm(np.empty(6, dtype=np.int32), np.empty(2, dtype=np.uint8),
              np.empty(2, dtype=c.dtype), transpose_a, transpose_b, m, n, k, alpha,
              np.intp(a.ctypes.data), max(a.strides[0] // a.itemsize, max(a.shape[1], 1)),
              np.intp(b.ctypes.data), max(b.strides[0] // b.itemsize, max(b.shape[1], 1)), beta,
              np.intp(c.ctypes.data), max(c.strides[0] // c.itemsize, max(c.shape[1], 1)))


@njit(**JIT)
def blas_gemm(ints, flags, scalars, transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb,
              beta, c, ldc):
    """``gemm`` on raw addresses (a, b, c: intp) and leading dimensions, row-major, in the
    dtype of ``scalars`` (float32 or float64, (2,): alpha and beta). Scratch arrays (ints: int32
    (6,), flags: uint8 (2,)) and scalars only, so one compiled copy per dtype serves every
    caller whatever its arrays' layouts."""
    # BLAS takes every argument by pointer: the int32 sizes at ints + 4·i, one-byte flags
    single = scalars.itemsize == 4
    scalars[0] = alpha
    scalars[1] = beta
    alpha_at = np.intp(scalars.ctypes.data)
    beta_at = alpha_at + scalars.itemsize
    at = np.intp(ints.ctypes.data)
    flag = np.intp(flags.ctypes.data)
    flags[0] = _TRANSPOSE if transpose_b else _NO_TRANSPOSE
    flags[1] = _TRANSPOSE if transpose_a else _NO_TRANSPOSE
    if m == 1:  # a row vector times a matrix: gemv streams the matrix once, gemm would pack it
        # c (1, n) as cᵀ = op(b)ᵀ · op(a)ᵀ; a row-major b (k, n) is a column-major (n, k)
        # matrix: op(b)ᵀ = it ('N') or its transpose
        ints[0] = k if transpose_b else n  # rows of the column-major matrix
        ints[1] = n if transpose_b else k  # its columns
        ints[2] = ldb
        ints[3] = lda if transpose_a else 1  # stride between op(a)'s entries
        ints[4] = 1
        if single:
            _sgemv(flag, at, at + 4, alpha_at, b, at + 8, a, at + 12, beta_at, c, at + 16)
        else:
            _dgemv(flag, at, at + 4, alpha_at, b, at + 8, a, at + 12, beta_at, c, at + 16)
        return
    ints[0] = n
    ints[1] = m
    ints[2] = k
    ints[3] = ldb
    ints[4] = lda
    ints[5] = ldc
    if single:
        _sgemm(flag, flag + 1, at, at + 4, at + 8, alpha_at, b, at + 12, a, at + 16, beta_at, c,
               at + 20)
    else:
        _dgemm(flag, flag + 1, at, at + 4, at + 8, alpha_at, b, at + 12, a, at + 16, beta_at, c,
               at + 20)


def check_gemm_sizes(*sizes, at="gemm"):
    """BLAS (LP64) takes int32 sizes; refuse rather than overflow."""
    for s in sizes:
        if int(s) > _INT32_MAX:
            raise ValueError(f"{at}: a matrix dimension or stride of {s} exceeds BLAS's int32 range")
