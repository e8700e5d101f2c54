"""Numba decorator flags, defined once for every kernel (see STYLE.md)."""

import numpy as np
from numba import njit

# njit is nopython mode. cache=True: compiled kernels survive between processes; nogil=True: callers may thread.
JIT = dict(cache=True, nogil=True)
# Kernels whose outer loop is a prange over independent output slices. Where a kernel's body
# is a chunk function (``<kernel>_chunk(t, …)``, plain JIT), its parallel wrapper only spreads
# the chunks over threads, and one chunk runs in the calling thread: Numba's parallel lowering
# costs about a second of compile time per wrapper, which a small call then never pays.
JIT_PARALLEL = dict(JIT, parallel=True)
# Small helpers inlined by Numba into each caller (its IR, not LLVM's choice): none is compiled
# as a function of its own (about 0.1 s each on a cold start), and on a hot path no call remains
# whose array arguments keep their reference counting (atomic increments and decrements) in the
# caller's loop: a Huffman walk with its decode step in such a helper ran 30-70x slower, a sparse
# codebook's row walk called once per row 1.2x.
JIT_INLINE = dict(JIT, inline="always")

# Multiply-adds below which a chunk of its own costs more (waking a thread) than it saves; at
# batch 1 every LeNet-5 layer stays below it (``work_chunks``).
MIN_CHUNK_WORK = 1 << 20

_INT32_MAX = np.iinfo(np.int32).max


@njit(**JIT_INLINE)
def chunk_bounds(t, chunks, tasks):
    """Tasks [lo, hi) of chunk t when ``tasks`` are split evenly over ``chunks``.

    Kernels run ``for t in prange(chunks)`` and give each chunk its own outputs (and buffers):
    a fixed split also makes sums come out the same on every run with the same thread count.
    """
    return t * tasks // chunks, (t + 1) * tasks // chunks


def index_dtype(*sizes):
    """int32 when every size (an element count or the largest index) fits, else int64.

    Never narrows: a size above int32's range gives int64 (scipy's ``get_index_dtype``).
    """
    if all(int(s) <= _INT32_MAX for s in sizes):
        return np.dtype(np.int32)
    return np.dtype(np.int64)


def chunk_count(tasks, min_per_chunk=1):
    """How many chunks to split ``tasks`` into: one per Numba thread, each ≥ ``min_per_chunk``."""
    import numba

    return max(1, min(numba.get_num_threads(), tasks // max(min_per_chunk, 1)))


def run_chunks(kernel, chunk, chunks, *args):
    """``kernel(*args)``, a prange over ``chunk(t, *args)`` for t < ``chunks``; one chunk runs
    in the calling thread instead, so a small call never compiles the parallel wrapper."""
    if chunks == 1:
        chunk(0, *args)
    else:
        kernel(*args)


def work_chunks(tasks, work):
    """Chunks for ``tasks`` independent tasks of ``work`` multiply-adds in all: one per Numba
    thread, at most one per task, each of at least ``MIN_CHUNK_WORK`` multiply-adds."""
    return chunk_count(min(tasks, work // MIN_CHUNK_WORK))
