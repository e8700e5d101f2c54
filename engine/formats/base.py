"""What every weight format shares: the interface layers use, bit packing, and the row hub.

A weight of shape (O, C/groups, kh, kw) or (O, I) is a matrix of O rows over its flattened
receptive field (K columns). Formats store that matrix differently; the kernels see each format
through one of two doors:

- dense-pattern formats (dense, codebook) hand the kernels blocks of rows as a dense matrix
  (a codebook decodes a block into a small scratch buffer) for BLAS;
- sparse formats (CSR, sparse codebook, Huffman) hand them one row at a time as a list of
  entries (column, value, slot) through ``row_entries``. The slot says which stored value the
  entry uses: the gradient of that stored value is the sum of dL/dW over its entries, which is
  the masked gradient for CSR and Deep Compression's per-centroid sum (eq. 3) for codebooks.

``row_entries`` dispatches on the type of the format's operand (a NamedTuple of its arrays) when
Numba compiles a kernel, so one sparse kernel per operation serves every sparse format.

A sparse format may also offer the direct hub, ``row_dot`` and ``row_dot_backward``: the product
with a row computed while walking its stored entries (EIE), nothing decoded into buffers. At a
small batch that reads the weight once per example at its stored size, which beats decoding the
row into buffers first; at a larger batch decoding once for the whole batch wins (the FC kernels
pick by batch size, ``linear.DIRECT_MAX_BATCH``). ``rows_dot`` computes a block of rows in one
call, so that no call per row remains in the loop; a format may give its own (the sparse codebook
keeps its arrays in hand, Huffman walks two rows at once: its walk waits on a chain of dependent
reads), the others loop over ``row_dot``.

Called as plain Python (``NUMBA_DISABLE_JIT=1``, to step through a kernel in a debugger) every
hub looks the operand's class up in the same registry and calls the same function.
"""

import copy
from collections import namedtuple

import numpy as np
from numba import njit, types
from numba.extending import overload

from .._jit import JIT

# ---------------------------------------------------------------------------------------------
# Bit packing: value i occupies bits [i·width, (i + 1)·width) of a little-endian bit stream


def pack_bits(values, width):
    """Pack non-negative ints < 2**width (width 1..8) into bytes, LSB first → uint8 array."""
    values = np.asarray(values)
    if not 1 <= width <= 8:
        raise ValueError(f"bit width must be 1..8, got {width}")
    if values.size and (values.min() < 0 or values.max() >= 1 << width):
        raise ValueError(f"values must lie in [0, {1 << width}) to pack in {width} bits")
    bits = ((values.astype(np.uint16).reshape(-1, 1) >> np.arange(width, dtype=np.uint16)) & 1)
    return np.packbits(bits.astype(np.uint8).reshape(-1), bitorder="little")


def unpack_bits(packed, count, width):
    """Inverse of ``pack_bits`` → uint8 array of ``count`` values."""
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), bitorder="little")
    if bits.size < count * width:
        raise ValueError(f"{packed.size} bytes hold fewer than {count} values of {width} bits")
    bits = bits[:count * width].reshape(count, width).astype(np.uint16)
    return (bits << np.arange(width, dtype=np.uint16)).sum(axis=1).astype(np.uint8)


def packed_nbytes(count, width):
    return (count * width + 7) // 8


@njit(**JIT)
def read_packed(packed, i, width):
    """Value i of a ``pack_bits`` stream (the caller checked i < count)."""
    if width == 8:  # the common widths without the general shifts (a branch the loop hoists)
        return np.int64(packed[i])
    if width == 4:
        return (np.int64(packed[i >> 1]) >> ((i & 1) << 2)) & 15
    # Two bytes read whatever the value spans, no branch on it: the branch goes either way at
    # random and its mispredictions made this read ten times slower (the clamped second byte
    # of the stream's last value is masked off).
    bit = i * width
    byte = bit >> 3
    after = min(byte + 1, packed.shape[0] - 1)
    v = (np.int64(packed[byte]) | (np.int64(packed[after]) << 8)) >> (bit & 7)
    return v & ((1 << width) - 1)


@njit(**JIT)
def read_word(packed, byte):
    """Bytes byte .. byte + 7 of a packed stream as one little-endian int64: the next 8 values
    of a ``width``-bit stream when byte = 8-value group × width (the caller checked byte + 8 ≤
    len(packed))."""
    i = np.uint64(byte)  # unsigned: no negative-index wraparound, so LLVM merges the 8 loads
    return (np.int64(packed[i]) | (np.int64(packed[i + np.uint64(1)]) << 8)
            | (np.int64(packed[i + np.uint64(2)]) << 16) | (np.int64(packed[i + np.uint64(3)]) << 24)
            | (np.int64(packed[i + np.uint64(4)]) << 32) | (np.int64(packed[i + np.uint64(5)]) << 40)
            | (np.int64(packed[i + np.uint64(6)]) << 48) | (np.int64(packed[i + np.uint64(7)]) << 56))


@njit(**JIT)
def word_groups(packed, width):
    """How many leading 8-value groups of a ``width``-bit stream ``read_word`` may read (the
    group's 8 bytes lie inside ``packed``)."""
    return max(0, (packed.shape[0] - 8) // width + 1)


# ---------------------------------------------------------------------------------------------
# The row hub for sparse formats

# Stored values are float32 whatever a net computes in (float64 for gradient checks).
VALUE_BYTES = 4

# NamedTuple class of an operand → njit function (W, o, cols, vals, slots, need_slots) → count
_ROW_DECODERS = {}


def register_row_decoder(operand_class, decoder):
    """Declare how a sparse format lists the entries of row o (see ``row_entries``)."""
    _ROW_DECODERS[operand_class] = decoder


def row_entries(W, o, cols, vals, slots, need_slots):
    """The entries of row o → (cols, vals, slots, count), arrays of ``count`` entries.

    cols[e]: column in [0, K); vals[e]: the weight; slots[e]: index of the stored value it
    uses (an empty array unless ``need_slots``). A format whose rows are stored plainly (CSR)
    returns views of its own arrays; the others decode into the buffers given (each at least
    the longest row) and return views of those. Entries that are stored zeros (Deep
    Compression's fillers) are left out.

    In a compiled kernel Numba resolves the decoder once per operand type (the overload below);
    this body is what runs with the JIT disabled.
    """
    return _ROW_DECODERS[type(W)](W, o, cols, vals, slots, need_slots)


@overload(row_entries, jit_options=JIT)
def _row_entries(W, o, cols, vals, slots, need_slots):
    if isinstance(W, types.BaseNamedTuple) and W.instance_class in _ROW_DECODERS:
        decoder = _ROW_DECODERS[W.instance_class]

        def impl(W, o, cols, vals, slots, need_slots):
            return decoder(W, o, cols, vals, slots, need_slots)

        return impl
    return None


# ---------------------------------------------------------------------------------------------
# The direct hub: products computed while walking a row's stored entries (EIE)

# NamedTuple class of an operand → (row_dot, row_dot_backward, rows_dot or None) njit functions
_ROW_DIRECT = {}


def register_row_direct(operand_class, dot, dot_backward, rows=None):
    """Declare how a sparse format computes on row o's stored entries directly (``row_dot``,
    ``row_dot_backward``, and optionally ``rows_dot``, a block of rows in one call). Optional:
    a sparse format without it runs on ``row_entries``."""
    _ROW_DIRECT[operand_class] = (dot, dot_backward, rows)


def has_row_direct(W):
    """Whether the operand ``W`` has a direct walk (``row_dot``)."""
    return type(W) in _ROW_DIRECT


def row_dot(W, o, x):
    """Σ_{(k, v) ∈ row o} v · x[k] for x (K,), computed while walking the row's stored entries:
    a code and a gap (or a column) read, the centroid looked up, the product added, nothing
    decoded into buffers (EIE's batch-1 product). Compiled kernels resolve it per operand type
    (the overload below); this body is what runs with the JIT disabled."""
    return _ROW_DIRECT[type(W)][0](W, o, x)


def rows_dot(W, lo, hi, x, bias, y):
    """y[o] = bias[o] + row_dot(W, o, x) for o in [lo, hi): x (K,), bias (O,), y (O,).

    One call for a block of rows, so that a format's walk keeps its arrays in hand from row to
    row (a call per row cost the sparse codebook a fifth of its time) and may walk several rows
    at once (Huffman walks two: each code's length says where the next starts, so one row's
    walk waits on a table lookup per code). A format without its own loops over ``row_dot``.
    Compiled kernels resolve it per operand type (the overload below)."""
    rows = _ROW_DIRECT[type(W)][2]
    if rows is not None:
        return rows(W, lo, hi, x, bias, y)
    for o in range(lo, hi):
        y[o] = bias[o] + row_dot(W, o, x)


def row_dot_backward(W, o, g, x, need_input, need_weight, dx, dvalues):
    """The gradients of g · row_dot(W, o, x), accumulated by walking row o's stored entries:
    dx[k] += g · v if ``need_input``, dvalues[slot] += g · x[k] if ``need_weight`` (the slot as in
    ``row_entries``), for each entry (k, v, slot). Compiled kernels resolve it per operand
    type (the overload below); this body is what runs with the JIT disabled."""
    _ROW_DIRECT[type(W)][1](W, o, g, x, need_input, need_weight, dx, dvalues)


def _direct(W, which):
    if isinstance(W, types.BaseNamedTuple) and W.instance_class in _ROW_DIRECT:
        return _ROW_DIRECT[W.instance_class][which]
    return None


@overload(row_dot, jit_options=JIT)
def _row_dot(W, o, x):
    dot = _direct(W, 0)
    if dot is not None:
        def impl(W, o, x):
            return dot(W, o, x)

        return impl
    return None


@overload(rows_dot, jit_options=JIT)
def _rows_dot(W, lo, hi, x, bias, y):
    dot, rows = _direct(W, 0), _direct(W, 2)
    if rows is not None:
        def impl(W, lo, hi, x, bias, y):
            rows(W, lo, hi, x, bias, y)

        return impl
    if dot is not None:
        def impl(W, lo, hi, x, bias, y):
            for o in range(lo, hi):
                y[o] = bias[o] + dot(W, o, x)

        return impl
    return None


@overload(row_dot_backward, jit_options=JIT)
def _row_dot_backward(W, o, g, x, need_input, need_weight, dx, dvalues):
    backward = _direct(W, 1)
    if backward is not None:
        def impl(W, o, g, x, need_input, need_weight, dx, dvalues):
            backward(W, o, g, x, need_input, need_weight, dx, dvalues)

        return impl
    return None


# ---------------------------------------------------------------------------------------------
# The block hub for dense-pattern formats

# NamedTuple class of an operand → njit function (W, lo, hi, scratch) → rows lo..hi as a matrix
_BLOCK_DECODERS = {}

DenseArrays = namedtuple("DenseArrays", "w2")


def register_block_decoder(operand_class, decoder):
    """Declare how a dense-pattern format produces rows lo..hi (see ``weight_rows``)."""
    _BLOCK_DECODERS[operand_class] = decoder


def weight_rows(W, lo, hi, scratch):
    """Rows lo..hi of the weight matrix as a (hi − lo, K) array: a view for dense weights, the
    rows decoded into ``scratch`` for a codebook. Compiled kernels resolve the decoder per
    operand type (the overload below); this body is what runs with the JIT disabled."""
    return _BLOCK_DECODERS[type(W)](W, lo, hi, scratch)


@njit(**JIT)
def _dense_rows(W, lo, hi, scratch):
    return W.w2[lo:hi]


register_block_decoder(DenseArrays, _dense_rows)


@overload(weight_rows, jit_options=JIT)
def _weight_rows(W, lo, hi, scratch):
    if isinstance(W, types.BaseNamedTuple) and W.instance_class in _BLOCK_DECODERS:
        decoder = _BLOCK_DECODERS[W.instance_class]

        def impl(W, lo, hi, scratch):
            return decoder(W, lo, hi, scratch)

        return impl
    return None


def needs_scratch(W):
    """Whether ``weight_rows`` decodes into scratch for this operand (codebooks) or not."""
    return not isinstance(W, DenseArrays)


# ---------------------------------------------------------------------------------------------
# The interface every format implements


class WeightFormat:
    """A layer's weight in some storage format; see the module docstring.

    Subclasses define ``kind``, ``from_dense``, ``from_arrays``, ``to_dense``, ``arrays``
    (every stored array by name), ``trainable`` (the names the optimizer updates),
    ``options`` (JSON-able settings), ``stored_nbytes`` and, for sparse formats, ``operand``
    and ``max_row_entries``.
    """

    kind = "?"
    sparse = False  # served by row_entries (else by dense row blocks)
    dense_view = False  # ``weight`` is the dense weight array itself: the dense kernels run on it
    array_names = ()  # every stored array, in state_dict order
    creation_options = ()  # the options from_dense takes
    trainable = ()  # names of the arrays that get gradients
    decay = ()  # names of the arrays that get weight decay

    def __init__(self, shape, dtype):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)

    @property
    def rows(self):
        return self.shape[0]

    @property
    def cols(self):
        return int(np.prod(self.shape[1:]))

    @property
    def size(self):
        return self.rows * self.cols

    def arrays(self):
        raise NotImplementedError

    def options(self):
        return {}

    def to_dense(self):
        raise NotImplementedError

    def stored_nbytes(self):
        """{part: bytes} as stored: values, indices, centroids, tables, header."""
        raise NotImplementedError

    def stored_bytes(self):
        return int(sum(self.stored_nbytes().values()))

    def ratio(self):
        """Dense float32 bytes / stored bytes."""
        return 4 * self.size / max(self.stored_bytes(), 1)

    def nnz(self):
        """Stored non-zero weights (fillers and explicit zeros excluded)."""
        return int(np.count_nonzero(self.to_dense()))

    def value_bits(self):
        """Bits of each stored weight's value or code: 32 for float values, a codebook's code
        bits, 8 for int8, 2 for ternary, 1 for binary."""
        return 32

    def stored_entries(self):
        """Weights the format stores one by one, read from its structure without decoding
        (a sparse format's entries, fillers included; every weight of a dense pattern)."""
        return self.size

    def magnitude(self):
        """The same weight with every stored value replaced by its absolute value: |W|.

        Every format decodes a weight by gathering stored values (each weight is one stored
        value or zero), so |decode(v)| = decode(|v|): |W| keeps the format's structure, and the
        format's own kernels compute |W|·x on its stored entries (the radius of interval bound
        propagation, ``robustcnn.certify``). A shallow copy: the structure arrays (indices,
        codes, streams) are shared, the trainable values are new arrays. The gradient of a
        function of |W| with respect to the stored values v is sign(v) times its gradient with
        respect to |v|.
        """
        out = copy.copy(self)
        for name in self.trainable:
            setattr(out, name, np.abs(getattr(self, name)))
        return out

    def magnitude_grads(self, grads):
        """The gradients with respect to this weight's trainable values of a function of |W|,
        from ``grads``, its gradients with respect to ``magnitude()``'s: sign(v) · g, as
        |W| = decode(|v|). A format whose ``magnitude()`` stores |W| otherwise says how."""
        values = self.arrays()
        return {k: np.sign(values[k]).astype(g.dtype) * g for k, g in grads.items()}

    def astype(self, dtype):
        """The same format with values of another float dtype."""
        arrays = {k: (v.astype(dtype) if k in self.trainable else v) for k, v in self.arrays().items()}
        return type(self).from_arrays(self.shape, arrays, self.options(), dtype=dtype)

    def summary(self):
        parts = ", ".join(f"{k} {v:,} B" for k, v in self.stored_nbytes().items())
        r = self.ratio()  # a sparse format of a dense weight is larger: say so
        than = f"{r:.1f}x smaller" if r >= 1 else f"{1 / r:.1f}x larger"
        return (f"{self.kind} {self.shape}: {self.stored_bytes():,} bytes ({parts}); "
                f"{than} than dense float32")

    def __repr__(self):
        return f"<{type(self).__name__} {self.shape} {self.dtype.name}, {self.stored_bytes():,} bytes>"


def check_structure_array(a, what, at, *, kinds="iu", ndim=1):
    """A copy of a stored integer array, of the right kind and rank (each format checks the
    values)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{at}: {what} must be a numpy array, got {type(a).__name__}")
    if a.dtype.kind not in kinds:
        raise TypeError(f"{at}: {what} has dtype {a.dtype}, expected {'integers' if kinds == 'iu' else kinds}")
    if a.ndim != ndim:
        raise ValueError(f"{at}: {what} must have {ndim} axis, got shape {a.shape}")
    return np.array(a, order="C")  # a format owns its arrays


def check_bits(bits, what, at):
    """A bit width of 1..8 (codes and gaps are packed in bytes)."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ValueError(f"{at}: {what} must be an integer 1..8, got {bits!r}")
    return int(bits)


def check_bytes(a, what, at):
    """A copy of a packed byte stream as uint8, refusing values a byte cannot hold."""
    a = check_structure_array(np.asarray(a), what, at)
    if a.size and (a.min() < 0 or a.max() > 255):
        raise ValueError(f"{at}: {what} holds values outside 0..255; it must be bytes")
    return a.astype(np.uint8, copy=False)


def check_weight(weight, shape, at, dtype):
    """A copy of a stored full-precision weight: the layer's ``shape``, finite, cast to ``dtype``
    (the dense format's and the latent formats' one array)."""
    weight = np.asarray(weight)
    if weight.shape != tuple(shape):
        raise ValueError(f"{at}: weight has shape {weight.shape}, the layer expects {tuple(shape)}")
    return check_values(weight.reshape(-1), "weight", at, dtype).reshape(shape)


def check_values(a, what, at, dtype):
    """A copy of stored float values: finite, cast to ``dtype``."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        raise TypeError(f"{at}: {what} has dtype {a.dtype}, expected floats")
    if a.ndim != 1:
        raise ValueError(f"{at}: {what} must have 1 axis, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{at}: {what} has non-finite values")
    return np.array(a, dtype=dtype, order="C")  # a format owns its arrays
