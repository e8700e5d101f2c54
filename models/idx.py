"""Read and write IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number ``00 00 TT DD`` (TT: type code, DD: number of
dimensions), DD big-endian uint32 sizes, then the data in big-endian C order. Files may be
gzipped; compression is recognised by its magic bytes (1f 8b), not by the file name.

Every malformed input raises ``ValueError`` naming the file and what is wrong, and no
buffer is sized from the header before the header has been checked against the bytes that
are actually there, so a corrupt size field cannot trigger a huge allocation. A header that
declares more than ``max_bytes`` of data (``robustcnn.limits``, default 512 MiB; Fashion-MNIST's
largest file holds 47 MB) is refused before anything is read, which also bounds what a gzip
stream may inflate to.
"""

from __future__ import annotations

import gzip as _gzip
import math
import os
import zlib

import numpy as np

from .. import limits
from ..atomic import atomic_path

# Type code -> big-endian dtype, as in the format's definition (LeCun's MNIST page).
_TYPE_CODES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF = {dt.newbyteorder("=").str: code for code, dt in _TYPE_CODES.items()}
_TYPE_LIST = ", ".join(f"0x{c:02X} {dt.name}" for c, dt in _TYPE_CODES.items())

_MAX_DIMS = 8
_GZIP_MAGIC = b"\x1f\x8b"
# Decompressed data is read in chunks of this size, so memory follows the bytes that
# really exist rather than the size the header claims.
_CHUNK = 1 << 20
# What a damaged gzip stream can raise while being read (BadGzipFile covers bad headers,
# CRC and length mismatches; EOFError a stream cut short; zlib.error bad deflate data).
_GZIP_ERRORS = (_gzip.BadGzipFile, EOFError, zlib.error)


def read_idx(path: str | os.PathLike, *, max_bytes: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a new native-endian array.

    Parameters
    ----------
    path : str or os.PathLike
        The file to read. Gzip compression is detected from the content.
    max_bytes : int, optional
        The most data the header may declare (default ``robustcnn.limits.MAX_BYTES``).

    Returns
    -------
    np.ndarray
        A writeable array with the shape and element type declared in the header
        (uint8, int8, int16, int32, float32 or float64), in native byte order.

    Raises
    ------
    ValueError
        If the file is not a well-formed IDX file: bad magic number or type code, zero or
        more than 8 dimensions, truncated header, data shorter or longer than the header
        declares, more data than ``max_bytes``, or a corrupt gzip stream. The message names
        the file.
    OSError
        If the file cannot be opened or read (e.g. ``FileNotFoundError``).
    """
    name = os.fspath(path)
    with open(name, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if not compressed:
            return _parse(raw, name, os.fstat(raw.fileno()).st_size, max_bytes)
        try:
            with _gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _parse(stream, name, None, max_bytes)
        except _GZIP_ERRORS as exc:
            raise ValueError(f"{name}: corrupt or truncated gzip stream ({exc})") from exc


def _parse(stream, name: str, available: int | None, max_bytes: int | None) -> np.ndarray:
    """Parse an IDX stream. ``available`` is the file size if known (raw files)."""
    magic = stream.read(4)
    if len(magic) < 4:
        raise ValueError(
            f"{name}: truncated header: expected a 4-byte magic number, found {len(magic)} bytes"
        )
    number = int.from_bytes(magic, "big")
    code, ndim = magic[2], magic[3]
    expected = "0x0000TTDD with type code TT and DD dimensions"
    if magic[:2] != b"\x00\x00":
        raise ValueError(
            f"{name}: bad magic number 0x{number:08X} (expected {expected}; "
            "an IDX file starts with two zero bytes)"
        )
    if code not in _TYPE_CODES:
        raise ValueError(
            f"{name}: bad magic number 0x{number:08X}: unknown type code 0x{code:02X} "
            f"(expected one of {_TYPE_LIST})"
        )
    if not 1 <= ndim <= _MAX_DIMS:
        raise ValueError(
            f"{name}: bad magic number 0x{number:08X}: {ndim} dimensions "
            f"(expected 1 to {_MAX_DIMS})"
        )

    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise ValueError(
            f"{name}: truncated header: {ndim} dimension sizes need {4 * ndim} bytes "
            f"after the magic number, found {len(sizes)}"
        )
    shape = tuple(int.from_bytes(sizes[4 * i : 4 * i + 4], "big") for i in range(ndim))
    dtype = _TYPE_CODES[code]
    # Python ints: 2**32-1 to the 8th power times 8 does not overflow here.
    need = math.prod(shape) * dtype.itemsize
    described = f"shape {shape} of {dtype.name} needs {need} bytes of data"
    what = f"the data (shape {shape} of {dtype.name})"

    header = 4 + 4 * ndim
    if available is not None:
        found = available - header
        if found != need:
            _raise_size_mismatch(name, described, need, found)
        limits.check_bytes(name, what, need, max_bytes)  # before reading
        data = stream.read(need)
        if len(data) != need:  # the file shrank between fstat and read
            _raise_size_mismatch(name, described, need, len(data))
    else:
        # One byte past the declared end: reaching the end of the stream makes gzip check
        # its CRC and length trailer, and a surplus byte reveals trailing data.
        limit = limits.resolve(max_bytes)
        data = _read_capped(stream, min(need, limit) + 1)
        if need > limit and len(data) > limit:  # more data than the limit: not read on
            limits.check_bytes(name, what, need, max_bytes)
        if len(data) != need:
            _raise_size_mismatch(name, described, need, len(data), at_least=True)

    try:
        flat = np.frombuffer(data, dtype=dtype)
        return flat.astype(dtype.newbyteorder("="), copy=True).reshape(shape)
    except ValueError as exc:  # numpy refuses shapes whose size overflows intp
        raise ValueError(f"{name}: {described}, which is too large for numpy ({exc})") from exc


def _read_capped(stream, limit: int) -> bytearray:
    """Read up to ``limit`` bytes in chunks, stopping early at end of stream."""
    buf = bytearray()
    while len(buf) < limit:
        chunk = stream.read(min(_CHUNK, limit - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def _raise_size_mismatch(name, described, need, found, at_least=False):
    if found < need:
        raise ValueError(f"{name}: truncated data: {described}, found {found}")
    more = "at least " if at_least else ""
    raise ValueError(
        f"{name}: {more}{found - need} trailing bytes after the data: {described}, "
        f"found {more}{found}"
    )


def write_idx(path: str | os.PathLike, array, *, gzip: bool | None = None) -> None:
    """Write an array as an IDX file, atomically.

    The data go to a temporary file in the same directory, which is fsynced and then renamed
    over ``path``, so readers never see a half-written file.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    array : array_like
        1- to 8-dimensional array of uint8, int8, int16, int32, float32 or float64 (any
        byte order); each dimension must be below 2**32.
    gzip : bool or None, keyword-only
        Compress with gzip. ``None`` (default) compresses if ``path`` ends in ``.gz``.

    Raises
    ------
    ValueError
        If the array's dtype or shape cannot be stored in IDX; the message names the file.
    """
    name = os.fspath(path)
    arr = np.asarray(array)
    code = _CODE_OF.get(arr.dtype.newbyteorder("=").str) if arr.dtype.kind in "iuf" else None
    if code is None:
        raise ValueError(
            f"{name}: cannot write dtype {arr.dtype} to IDX "
            "(expected uint8, int8, int16, int32, float32 or float64)"
        )
    if not 1 <= arr.ndim <= _MAX_DIMS:
        raise ValueError(
            f"{name}: cannot write a {arr.ndim}-dimensional array to IDX "
            f"(expected 1 to {_MAX_DIMS} dimensions)"
        )
    if any(n >= 2**32 for n in arr.shape):
        raise ValueError(f"{name}: shape {arr.shape} has a dimension of 2**32 or more")
    if gzip is None:
        gzip = name.endswith(".gz")

    header = bytes([0, 0, code, arr.ndim]) + b"".join(n.to_bytes(4, "big") for n in arr.shape)
    data = np.ascontiguousarray(arr, dtype=_TYPE_CODES[code]).tobytes()

    with atomic_path(name) as tmp, open(tmp, "wb") as out:
        if gzip:
            # mtime=0 and no embedded name: identical arrays give identical files. Level 6
            # (zlib's default) is several times faster than gzip's 9 on images for a few
            # percent of size.
            with _gzip.GzipFile(filename="", fileobj=out, mode="wb", compresslevel=6,
                                mtime=0) as z:
                z.write(header)
                z.write(data)
        else:
            out.write(header)
            out.write(data)
