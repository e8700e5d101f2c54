"""Checkpoints: the digest covers the architecture and metadata (version 2), version-1 files
are still read with their own digest, declared sizes are checked before anything is read, and
a damaged file is one ValueError naming it, whatever HDF5 raises."""

import hashlib
import json
import tracemalloc

import h5py
import numpy as np
import pytest

from robustcnn.engine import Linear, Net, ReLU
from robustcnn.engine.checkpoint import VERSION, load_net, read_checkpoint, save_checkpoint


def _net():
    return Net([Linear("ip1", 8), ReLU("relu1"), Linear("ip2", 3)], (1, 4, 4), seed=2)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.h5"
    save_checkpoint(path, _net(), meta={"dataset": "mnist"})
    return path


def test_the_digest_covers_spec_and_meta(saved):
    assert read_checkpoint(saved)["version"] == VERSION == 2
    x = np.random.default_rng(0).random((4, 1, 4, 4)).astype(np.float32) - 0.5
    before = load_net(saved)[0].forward(x)
    with h5py.File(saved, "r+") as f:
        spec = json.loads(f.attrs["spec"])
        spec["layers"][1]["negative_slope"] = 5.0  # what the probe did, silently
        f.attrs["spec"] = json.dumps(spec)
    with pytest.raises(ValueError, match=f"{saved}: checksum mismatch"):
        load_net(saved)
    with h5py.File(saved, "r+") as f:  # the spec back, the metadata edited
        spec["layers"][1]["negative_slope"] = 0.0
        f.attrs["spec"] = json.dumps(spec)
        f.attrs["meta"] = json.dumps({"dataset": "cifar-10"})
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_net(saved)
    assert before.shape == (4, 3)


def test_version_1_files_are_read_with_their_array_digest(saved):
    with h5py.File(saved, "r+") as f:
        arrays = {k: f["state"][k][()] for k in ("ip1/bias", "ip1/weight", "ip2/bias",
                                                  "ip2/weight")}
        h = hashlib.sha256()  # version 1: the arrays only, as it was written
        for key in sorted(arrays):
            a = np.ascontiguousarray(arrays[key])
            h.update(f"state/{key}:{a.dtype.str}:{a.shape}".encode() + a.tobytes())
        f.attrs["version"] = 1
        f.attrs["sha256"] = h.hexdigest()
    ckpt = read_checkpoint(saved)
    assert ckpt["version"] == 1 and ckpt["meta"] == {"dataset": "mnist"}
    net, _ = load_net(saved)
    np.testing.assert_array_equal(net.params["ip1"]["weight"], _net().params["ip1"]["weight"])
    with h5py.File(saved, "r+") as f:
        f.attrs["version"] = 3
    with pytest.raises(ValueError, match="checkpoint version 3 is not supported"):
        read_checkpoint(saved)


def test_declared_sizes_are_checked_before_reading(saved):
    with h5py.File(saved, "r+") as f:
        del f["state/ip1/weight"]
        f.create_dataset("state/ip1/weight", shape=(2**31,), dtype="f4", chunks=(1 << 16,))
    assert saved.stat().st_size < 100_000
    tracemalloc.start()
    with pytest.raises(ValueError, match=r"state/ip1/weight declares \(2147483648,\) float32"):
        load_net(saved)
    assert tracemalloc.get_traced_memory()[1] < 4 << 20
    tracemalloc.stop()


def test_arrays_over_the_limit_are_refused(saved):
    nbytes = sum(a.nbytes for a in _net().state_dict().values())
    with pytest.raises(ValueError, match=f"the checkpoint's arrays takes {nbytes:,} bytes, more "
                                         f"than the limit of 100 bytes"):
        load_net(saved, max_bytes=100)


def test_every_truncation_and_a_spec_of_infinity_are_value_errors(saved, tmp_path):
    data = saved.read_bytes()
    cut = tmp_path / "cut.h5"
    for n in range(0, len(data), max(len(data) // 60, 1)):
        cut.write_bytes(data[:n])
        with pytest.raises(ValueError, match=str(cut)):
            load_net(cut)
    with h5py.File(saved, "r+") as f:
        f.attrs["spec"] = f.attrs["spec"].replace('"out_features": 8', '"out_features": Infinity')
        f.attrs["sha256"] = "0" * 64
    with pytest.raises(ValueError, match=str(saved)):
        load_net(saved)
