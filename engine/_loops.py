"""Small vector loops shared by the kernels: axpy, add, dot, strided views, sparse row products.

Inner loops run over views with an index k that provably starts at 0: LLVM can then drop
Numba's negative-index wraparound and vectorise (5× on the depthwise kernels). A unit-stride
view keeps Numba's contiguous layout, so each helper is called with one where it can.
"""

from numba import njit

from ._jit import JIT


@njit(**JIT)
def taps(row, start, count, step):
    """The strided view row[start], row[start + step], … (count entries)."""
    if count <= 0:
        return row[0:0]
    return row[start:start + (count - 1) * step + 1:step]


@njit(**JIT)
def axpy(dst, alpha, src):
    # dst += alpha · src
    for k in range(dst.shape[0]):
        dst[k] += alpha * src[k]


@njit(**JIT)
def add(dst, src):
    # dst += src
    for k in range(dst.shape[0]):
        dst[k] += src[k]


@njit(**JIT)
def multiply_add(dst, a, b):
    # dst += a ⊙ b
    for k in range(dst.shape[0]):
        dst[k] += a[k] * b[k]


@njit(**JIT)
def dot(a, b):
    # Σ_p a[p] · b[p] in four running sums (independent chains; without fastmath LLVM keeps
    # the order of a single sum, so one accumulator would serialise on its latency)
    s0 = s1 = s2 = s3 = 0.0
    n = a.shape[0]
    i = 0
    while i + 4 <= n:
        s0 += a[i] * b[i]
        s1 += a[i + 1] * b[i + 1]
        s2 += a[i + 2] * b[i + 2]
        s3 += a[i + 3] * b[i + 3]
        i += 4
    while i < n:
        s0 += a[i] * b[i]
        i += 1
    return (s0 + s1) + (s2 + s3)


@njit(**JIT)
def sparse_row_product(out, src, cols, vals, count):
    # out (P,) += Σ_e vals[e] · src[cols[e]]   (src: (K, P)); four entries per pass over out
    e = 0
    while e + 4 <= count:
        v0, v1, v2, v3 = vals[e], vals[e + 1], vals[e + 2], vals[e + 3]
        s0, s1, s2, s3 = src[cols[e]], src[cols[e + 1]], src[cols[e + 2]], src[cols[e + 3]]
        for p in range(out.shape[0]):
            out[p] += v0 * s0[p] + v1 * s1[p] + v2 * s2[p] + v3 * s3[p]
        e += 4
    while e < count:
        axpy(out, vals[e], src[cols[e]])
        e += 1


@njit(**JIT)
def sparse_dot(cols, vals, x, count):
    # Σ_e vals[e] · x[cols[e]] in four running sums (see ``dot``)
    s0 = s1 = s2 = s3 = 0.0
    e = 0
    while e + 4 <= count:
        s0 += vals[e] * x[cols[e]]
        s1 += vals[e + 1] * x[cols[e + 1]]
        s2 += vals[e + 2] * x[cols[e + 2]]
        s3 += vals[e + 3] * x[cols[e + 3]]
        e += 4
    while e < count:
        s0 += vals[e] * x[cols[e]]
        e += 1
    return (s0 + s1) + (s2 + s3)
