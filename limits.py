"""What one file may make robustcnn allocate, checked before anything is allocated.

Every reader of a file (models of every format and their weights, datasets, the study's TOML
and SQLite files) computes the bytes the file's declared shapes imply and checks them, before
allocating, against the bytes the file holds and against one limit, ``max_bytes``:

    MAX_BYTES = 512 MiB (2**29 bytes)   the default

For a model it bounds the file's size, the arrays the file declares (each HDF5 dataset, the
``.rcnn`` array table, Caffe blobs, Keras weights), the parameters its architecture declares
(dense, in the net's dtype, counted layer by layer before each is allocated) and each blob of
one example; for a dataset, the bytes of each file. 512 MiB holds AlexNet, GoogLeNet, ResNet-50,
Inception v3 (61 M parameters and fewer, float32); VGG-16 (138 M, 553 MB) needs more. Raise it
for a genuinely large model, per call or per command (the one knob, under one name):

    net, meta = robustcnn.load("vgg16.h5", max_bytes=1 << 30)
    robustcnn info vgg16.h5 --max-model-bytes 1G

HDF5 datasets are read only after their shape, type and storage were checked (no external or
virtual storage, no more declared bytes than stored ones: unwritten or compressed data is not
read), in slabs of at most ``SLAB_BYTES``. The HDF5 library itself can loop forever or crash
on a damaged file (fuzzed attribute heaps made it loop): every read of an HDF5 file runs first
in a forked child under a time and an address-space limit (``read_hdf5``), and a file it does
not finish is refused. Links to other files are refused. Errors are one ValueError naming the
file.
"""

import contextlib
import faulthandler
import os
import re
import signal
import time

MAX_BYTES = 1 << 29
SLAB_BYTES = 16 << 20  # an HDF5 dataset is read this much at a time
RAISE_HINT = "raise the limit with max_bytes= (Python) or --max-model-bytes (the command)"


def resolve(max_bytes):
    """``max_bytes`` checked (an integer >= 1), or ``MAX_BYTES`` for None."""
    if max_bytes is None:
        return MAX_BYTES
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be an integer >= 1, got {max_bytes!r}")
    return max_bytes


def check_bytes(source, what, nbytes, max_bytes):
    """Refuse ``what`` of ``source`` declaring ``nbytes`` when that is over ``max_bytes``."""
    max_bytes = resolve(max_bytes)
    if nbytes > max_bytes:
        raise ValueError(f"{source}: {what} takes {nbytes:,} bytes, more than the limit of "
                         f"{max_bytes:,} bytes ({RAISE_HINT})")


_SIZE = re.compile(r"\s*(\d+)\s*([KMGT]?)(i?B)?\s*", re.IGNORECASE)


def parse_size(text, option="--max-model-bytes"):
    """A byte count as ``536870912``, ``512M``, ``2G`` or ``2GiB`` (powers of 1024) → int."""
    found = _SIZE.fullmatch(str(text))
    if not found or int(found.group(1)) < 1:
        raise ValueError(f"{option} must be a positive number of bytes such as 536870912, "
                         f"512M or 2G, got {text!r}")
    return int(found.group(1)) << (10 * " KMGT".index((found.group(2) or " ").upper()))


def read_file(path, max_bytes=None, what="file"):
    """The bytes of the file at ``path``, refused when it holds more than ``max_bytes``."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    check_bytes(path, f"the {what}", size, max_bytes)
    with open(path, "rb") as f:
        data = f.read(size + 1)  # not read(max_bytes): that reserves max_bytes of memory first
    if len(data) != size:
        raise ValueError(f"{path}: the {what} changed while it was read ({size:,} bytes, then "
                         f"{len(data):,})")
    return data


# ---------------------------------------------------------------------------------------------
# HDF5

# What h5py raises for a damaged file: its C library's errors come as OSError or RuntimeError,
# an object that cannot be opened as KeyError, an unreadable type as TypeError; a RuntimeError
# inside a link visit leaves h5py's lock as SystemError (its cause is the RuntimeError).
HDF5_ERRORS = (OSError, RuntimeError, KeyError, TypeError, SystemError)


@contextlib.contextmanager
def hdf5_file(path, what="HDF5 file"):
    """``h5py.File(path, "r")``, refused if it links to another file, and whatever h5py raises
    inside the block for a damaged file as one ValueError naming it (a ValueError that does not
    name it gets its name). Files robustcnn did not write are read through ``read_hdf5``."""
    import h5py

    path = os.fspath(path)
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise
    except HDF5_ERRORS + (ValueError,) as e:
        kind = what if what.endswith("HDF5 file") else f"HDF5 file ({what})"
        raise ValueError(f"{path}: not a readable {kind.replace('Keras HDF5', 'HDF5')} "
                         f"({one_line(e)})") from None
    try:
        with f:
            external = []
            f.visititems_links(lambda name, link: external.append(name)
                               if isinstance(link, h5py.ExternalLink) else None)
            if external:
                raise ValueError(f"{path}: {external[0]} links to another file, which is not "
                                 f"read")
            yield f
    except ValueError as e:
        if str(e).startswith(path):
            raise
        raise ValueError(f"{path}: {one_line(e)}") from None
    except HDF5_ERRORS as e:
        e = e.__cause__ if isinstance(e, SystemError) and e.__cause__ is not None else e
        raise ValueError(f"{path}: damaged {what} ({type(e).__name__}: {one_line(e)})") \
            from None


def one_line(e, limit=None):
    """An exception's message on one line (whitespace runs, newlines included, as one space),
    cut to ``limit`` characters; its type's name when it has none. Error messages name a file
    and say what is wrong in one line, whatever the library below wrote."""
    text = " ".join(str(e).split())[:limit]
    return text or type(e).__name__


def dataset_nbytes(ds, source, name):
    """The bytes an HDF5 dataset of numbers declares, checked against what the file stores
    for it, before any of it is read."""
    if ds.dtype.kind not in "fiu" or ds.dtype.itemsize > 8:
        raise ValueError(f"{source}: {name} has dtype {ds.dtype}; only numbers are read")
    if ds.is_virtual or ds.external:
        raise ValueError(f"{source}: {name} keeps its data in other files (external or virtual "
                         f"storage), which are not read")
    count = 1
    for d in ds.shape or ():
        count *= int(d)
    nbytes = count * ds.dtype.itemsize
    stored = ds.id.get_storage_size()
    if stored < nbytes:
        raise ValueError(f"{source}: {name} declares {ds.shape} {ds.dtype} ({nbytes:,} bytes) "
                         f"but the file stores {stored:,} bytes for it (unwritten or compressed "
                         f"data is not read)")
    return nbytes


def read_dataset(ds, source, name):
    """An HDF5 dataset of numbers as a native-order array, checked (``dataset_nbytes``) and read
    in slabs of at most ``SLAB_BYTES`` along its first axis."""
    import numpy as np

    nbytes = dataset_nbytes(ds, source, name)
    out = np.empty(ds.shape, dtype=ds.dtype.newbyteorder("="))
    if out.ndim == 0 or out.size == 0:
        if out.size:
            out[()] = ds[()]
        return out
    row = max(nbytes // out.shape[0], 1)
    step = max(SLAB_BYTES // row, 1)
    for lo in range(0, out.shape[0], step):
        hi = min(lo + step, out.shape[0])
        ds.read_direct(out, np.s_[lo:hi], np.s_[lo:hi])
    return out


# ---------------------------------------------------------------------------------------------
# The HDF5 library in a child first

HDF5_SECONDS = 10.0
# What reading an HDF5 file may add to the child's address space beyond the arrays the file
# can hold (their bytes are at most the file's size: compressed data is refused): h5py's and
# the library's own structures. A damaged file can make the library allocate gigabytes.
HDF5_SLACK_BYTES = 256 << 20
_HDF5_OUT_OF_MEMORY = 3  # the child's exit status when an allocation failed under its limit


def read_hdf5(path, read, what="HDF5 file", max_bytes=None):
    """``read(f)`` of the HDF5 file at ``path`` (open, as ``hdf5_file`` opens it) → its result.

    The HDF5 library can loop forever or crash on a damaged file. So ``read`` runs first in a
    forked child, under a time limit (``HDF5_SECONDS`` plus 1 s per 20 MB of file) and an
    address-space limit (the bytes the file can hold, up to ``max_bytes``, plus
    ``HDF5_SLACK_BYTES``); only if it finished there (returning or raising, but not for want of
    memory) does it run in this process. The same calls on the same bytes behave the same way, so this process makes no
    call the child did not finish. ``read`` must use h5py and NumPy only (no Numba: a forked
    child must not start its thread pool) and return plain data. Without ``os.fork``
    (Windows), ``read`` runs here directly.
    """
    path = os.fspath(path)
    if hasattr(os, "fork"):
        _finishes_in_child(path, read, what, max_bytes)
    with hdf5_file(path, what) as f:
        return read(f)


def _finishes_in_child(path, read, what, max_bytes):
    """Run ``read`` on the file in a forked child; refuse (ValueError) a file it did not finish
    (timed out, died of a signal or ran out of the memory its file can need)."""
    size = os.path.getsize(path)
    seconds = HDF5_SECONDS + size / 20e6
    # h5py holds its global lock across fork (its own at-fork hooks), so no other thread of
    # this process is inside the HDF5 library when the child starts (tests/test_limits.py).
    pid = os.fork()
    if pid == 0:  # the child: h5py and NumPy only
        status = 0
        try:
            faulthandler.disable()  # a crash here is reported by the parent, in one line
            _limit_address_space(min(resolve(max_bytes), 16 * size) + HDF5_SLACK_BYTES)
            with hdf5_file(path, what) as f:
                read(f)
        except BaseException as e:  # noqa: BLE001: this process's own run reports the others
            text = f"{e} {e.__context__}"
            if isinstance(e, MemoryError) or "memory allocation failed" in text:
                status = _HDF5_OUT_OF_MEMORY
        finally:
            os._exit(status)
    deadline = time.monotonic() + seconds
    done, status, pause = 0, 0, 0.0005
    while not done and time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            time.sleep(pause)
            pause = min(2 * pause, 0.05)
    if not done:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise ValueError(f"{path}: damaged {what}: the HDF5 library did not finish reading it "
                         f"in {seconds:.0f} s")
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == _HDF5_OUT_OF_MEMORY:
        raise ValueError(f"{path}: damaged {what}: the HDF5 library ran out of the memory a "
                         f"file of {size:,} bytes can need while reading it")
    if os.WIFSIGNALED(status):
        raise ValueError(f"{path}: damaged {what}: the HDF5 library crashed reading it "
                         f"({signal.Signals(os.WTERMSIG(status)).name})")


def _limit_address_space(extra_bytes):
    """Hold this (child) process to what it has mapped plus ``extra_bytes``."""
    import resource

    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    cap = mapped + extra_bytes
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft > cap:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
