"""limits.py: the size limit, HDF5 datasets read only after their declared size was checked
(in slabs), and every HDF5 read run in a child first so that a file the HDF5 library loops or
crashes on is refused instead of hanging or killing the process."""

import os
import signal
import time
import threading
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest

from robustcnn import limits

LOOPS = Path(__file__).parent / "fuzz" / "data" / "hdf5_loops.h5"


@pytest.mark.parametrize("text, value", [("536870912", 1 << 29), ("512M", 1 << 29),
                                         ("2G", 2 << 30), ("2GiB", 2 << 30), ("1k", 1024),
                                         (" 3 MB ", 3 << 20)])
def test_parse_size(text, value):
    assert limits.parse_size(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "1.5G", "lots", "", "2X"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError, match="--max-model-bytes must be a positive number"):
        limits.parse_size(text)


def test_resolve_and_check_bytes():
    assert limits.resolve(None) == limits.MAX_BYTES == 512 << 20
    with pytest.raises(ValueError, match="max_bytes must be an integer >= 1"):
        limits.resolve(0)
    limits.check_bytes("f", "x", limits.MAX_BYTES, None)
    with pytest.raises(ValueError, match=r"f: x takes 536,870,913 bytes, more than the limit "
                                         r"of 536,870,912 bytes \(raise the limit with"):
        limits.check_bytes("f", "x", limits.MAX_BYTES + 1, None)


def test_read_file_refuses_more_than_the_limit(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100)
    assert limits.read_file(path, 100) == b"x" * 100
    with pytest.raises(ValueError, match=f"{path}: the model file takes 100 bytes"):
        limits.read_file(path, 99, "model file")


def test_datasets_are_read_in_slabs_after_their_storage_is_checked(tmp_path, monkeypatch):
    path = tmp_path / "d.h5"
    a = np.arange(1000 * 7, dtype=">f4").reshape(1000, 7)
    with h5py.File(path, "w") as f:
        f.create_dataset("a", data=a, chunks=(10, 7))
        f.create_dataset("scalar", data=np.float64(2.5))
        f.create_dataset("empty", data=np.zeros((0, 3), "f4"))
        f.create_dataset("unwritten", shape=(2**31,), dtype="f4", chunks=(1024,))
        f.create_dataset("gzip", data=np.zeros(10000, "f4"), compression="gzip")
        f.create_dataset("text", data=np.array([b"x"]))
    monkeypatch.setattr(limits, "SLAB_BYTES", 4 * 28 + 3)  # 4 rows of 28 bytes a slab
    calls = []
    real = h5py.Dataset.read_direct
    monkeypatch.setattr(h5py.Dataset, "read_direct",
                        lambda self, *a, **k: (calls.append(1), real(self, *a, **k)))
    with h5py.File(path, "r") as f:
        out = limits.read_dataset(f["a"], "d.h5", "a")
        assert out.dtype == np.dtype("=f4") and len(calls) == 250
        np.testing.assert_array_equal(out, a)
        assert float(limits.read_dataset(f["scalar"], "d.h5", "scalar")) == pytest.approx(2.5)
        assert limits.read_dataset(f["empty"], "d.h5", "empty").shape == (0, 3)
        tracemalloc.start()
        with pytest.raises(ValueError, match=r"d.h5: unwritten declares \(2147483648,\) float32 "
                                             r"\(8,589,934,592 bytes\) but the file stores 0"):
            limits.read_dataset(f["unwritten"], "d.h5", "unwritten")
        assert tracemalloc.get_traced_memory()[1] < 1 << 20  # refused before allocating
        tracemalloc.stop()
        with pytest.raises(ValueError, match="unwritten or compressed data is not read"):
            limits.dataset_nbytes(f["gzip"], "d.h5", "gzip")
        with pytest.raises(ValueError, match="text has dtype"):
            limits.dataset_nbytes(f["text"], "d.h5", "text")


def test_external_links_and_storage_are_refused(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("w", data=np.ones(3, "f4"))
    linked = tmp_path / "linked.h5"
    with h5py.File(linked, "w") as f:
        f["w"] = h5py.ExternalLink(str(other), "/w")
    with pytest.raises(ValueError, match=f"{linked}: w links to another file"):
        limits.read_hdf5(linked, lambda f: f["w"][()])
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.ones(4, "f4").tobytes())
    external = tmp_path / "external.h5"
    with h5py.File(external, "w") as f:
        f.create_dataset("w", shape=(4,), dtype="f4", external=[(str(raw), 0, 16)])
    with pytest.raises(ValueError, match="keeps its data in other files"):
        limits.read_hdf5(external, lambda f: limits.read_dataset(f["w"], external, "w"))


def _write_small(path):
    with h5py.File(path, "w") as f:
        f.create_dataset("w", data=np.ones(3, "f4"))


def test_a_read_that_hangs_or_crashes_in_the_child_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "ok.h5"
    _write_small(path)
    assert limits.read_hdf5(path, lambda f: f["w"][()].sum()) == 3.0
    monkeypatch.setattr(limits, "HDF5_SECONDS", 1.0)
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=f"{path}: damaged HDF5 file: the HDF5 library did not "
                                         f"finish reading it in 1 s"):
        limits.read_hdf5(path, lambda f: time.sleep(60))
    assert time.monotonic() - t0 < 30
    with pytest.raises(ValueError, match="the HDF5 library crashed reading it \\(SIGSEGV\\)"):
        limits.read_hdf5(path, lambda f: os.kill(os.getpid(), signal.SIGSEGV))
    # An exception in the child is left to this process's own run, which raises it: h5py's
    # error types as one ValueError naming the file, any other (a bug) as it is.
    with pytest.raises(ValueError, match=f"{path}: damaged HDF5 file \\(KeyError: .*'missing'"):
        limits.read_hdf5(path, lambda f: f["missing"])
    with pytest.raises(ZeroDivisionError):
        limits.read_hdf5(path, lambda f: 1 // 0)


def test_a_file_the_hdf5_library_loops_on_is_refused(monkeypatch):
    """Found by the fuzzer: a mutated checkpoint on which reading the root's attributes never
    returns (HDF5 2.0.0). Whatever a later HDF5 makes of it, it is a clean error, in time."""
    import robustcnn

    monkeypatch.setattr(limits, "HDF5_SECONDS", 2.0)
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=str(LOOPS)):
        robustcnn.load(LOOPS)
    assert time.monotonic() - t0 < 60


def test_what_h5py_raises_reading_a_damaged_dataset_is_one_line_naming_the_file(tmp_path,
                                                                                 monkeypatch):
    """About 5% of mutated checkpoints, Caffe HDF5 and Keras files made h5py raise RuntimeError
    (a damaged chunk, "Can't decompress data") while a dataset was read: each reader turns it
    into one ValueError naming the file."""
    import robustcnn
    from robustcnn.engine import Linear, Net, ReLU
    from robustcnn.engine.checkpoint import save_checkpoint
    from robustcnn.models.keras import save_keras

    net = Net([Linear("ip1", 8), ReLU("relu1"), Linear("ip2", 3)], (1, 4, 4))
    checkpoint, keras = tmp_path / "c.h5", tmp_path / "k.h5"
    save_checkpoint(checkpoint, net)
    save_keras(net, keras)
    prototxt, weights = tmp_path / "n.prototxt", tmp_path / "n.caffemodel.h5"
    prototxt.write_text('name: "n"\ninput: "data"\ninput_shape { dim: 1 dim: 16 }\n'
                        'layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" '
                        'inner_product_param { num_output: 3 } }\n')
    with h5py.File(weights, "w") as f:
        f["data/ip1/0"] = np.ones((3, 16), "f4")
        f["data/ip1/1"] = np.zeros(3, "f4")
    loads = [(checkpoint, lambda: robustcnn.load(checkpoint)),
             (keras, lambda: robustcnn.load(keras)),
             (weights, lambda: robustcnn.load(prototxt, weights=weights))]
    for _, load in loads:
        load()  # intact, they load

    def damaged(*args, **kwargs):
        raise RuntimeError("Can't synchronously read data (inflate() failed)")

    monkeypatch.setattr(h5py.Dataset, "read_direct", damaged)
    monkeypatch.setattr(h5py.Dataset, "__getitem__", damaged)
    for path, load in loads:
        with pytest.raises(ValueError) as caught:
            load()
        message = str(caught.value)
        assert str(path) in message and "RuntimeError" in message and "\n" not in message


def test_a_damaged_link_table_is_one_clean_error(tmp_path, monkeypatch):
    """h5py's lock turns a RuntimeError raised while visiting a damaged file's links into a
    SystemError (found by the long fuzzing run): still one ValueError naming the file."""
    import h5py

    from robustcnn.limits import hdf5_file

    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f["x"] = [1.0]

    def broken(self, func):
        try:
            raise RuntimeError("unable to offset into local heap data block")
        except RuntimeError as e:
            raise SystemError("FastRLock.__exit__ returned a result with an exception set") from e

    monkeypatch.setattr(h5py.Group, "visititems_links", broken)
    with pytest.raises(ValueError, match=r"m.h5: damaged .*RuntimeError: unable to offset"):
        with hdf5_file(path):
            pass


def test_a_thread_inside_h5py_at_the_fork_does_not_stall_the_child(tmp_path, monkeypatch):
    """Forking while another thread holds h5py's lock would leave the child's copy of the lock
    held forever: the child would time out on a good file. h5py takes its lock around every
    fork (os.register_at_fork), so the fork waits for the other thread instead."""
    from h5py._objects import phil

    path = tmp_path / "ok.h5"
    _write_small(path)
    monkeypatch.setattr(limits, "HDF5_SECONDS", 2.0)
    holding, release = threading.Event(), threading.Event()

    def hold_the_lock():
        with phil:
            holding.set()
            release.wait(10)

    other = threading.Thread(target=hold_the_lock)
    other.start()
    holding.wait(10)
    threading.Timer(0.5, release.set).start()
    try:
        assert limits.read_hdf5(path, lambda f: f["w"][()].sum()) == 3.0
    finally:
        release.set()
        other.join()


def test_a_read_that_runs_out_of_memory_in_the_child_is_not_repeated_here(tmp_path,
                                                                          monkeypatch):
    """Found by the long fuzzing run: a damaged Keras file made the HDF5 library allocate
    2.5 GiB. The child's limit stopped it, but this process then repeated the read without
    one. Now the child's failed allocation is the answer."""
    path = tmp_path / "ok.h5"
    _write_small(path)
    done = []

    def greedy(f):
        # More than all this process has mapped plus the slack: no free block it already holds
        # (a long-lived test worker keeps some) can serve it, so only a failed allocation or a
        # missing limit can follow. np.empty does not touch the pages if the limit is missing.
        with open("/proc/self/statm") as statm:
            mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        block = np.empty((mapped + limits.HDF5_SLACK_BYTES + (64 << 20)) // 8)
        done.append(block.size)  # reached only where the allocation succeeded

    with pytest.raises(ValueError, match=f"^{path}: damaged HDF5 file: the HDF5 library ran "
                                         f"out of the memory"):
        limits.read_hdf5(path, greedy)
    assert done == []
