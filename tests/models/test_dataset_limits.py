"""Datasets: a header declaring more than the limit is refused before anything is read (which
also bounds what a gzip stream may inflate to), and an empty split is an error, not nan%."""

import gzip
import struct
import tracemalloc

import numpy as np
import pytest

from robustcnn.models.datasets import input_shape, load_cifar10, load_mnist_like
from robustcnn.models.idx import read_idx, write_idx


def test_declared_size_over_the_limit_is_refused_before_reading(tmp_path):
    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">III", 60000, 28, 28)
    with gzip.open(bomb, "wb") as f:  # 47 MB declared and inflated from a small file
        f.write(header + bytes(60000 * 28 * 28))
    assert read_idx(bomb).shape == (60000, 28, 28)
    tracemalloc.start()
    with pytest.raises(ValueError, match=f"{bomb}: the data .* takes 47,040,000 bytes, more "
                                         f"than the limit of 1,000,000 bytes"):
        read_idx(bomb, max_bytes=10**6)
    assert tracemalloc.get_traced_memory()[1] < 4 << 20  # the limit and one chunk, not 47 MB
    tracemalloc.stop()
    # A raw file whose size matches its header, over the limit: refused before reading.
    big = tmp_path / "big-idx1-ubyte"
    big.write_bytes(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 2000) + bytes(2000))
    assert read_idx(big).shape == (2000,)
    with pytest.raises(ValueError, match=f"{big}: the data .* takes 2,000 bytes, more than the "
                                         f"limit of 1,000 bytes"):
        read_idx(big, max_bytes=1000)


def test_an_empty_split_is_an_error(tmp_path):
    for split in ("train", "t10k"):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", np.zeros(0, np.uint8))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte: holds no images \\(an empty "
                                         "test split\\)"):
        load_mnist_like("mnist", "test", data_dir=tmp_path)


def test_cifar_batches_over_the_limit_are_refused(tmp_path, monkeypatch):
    from robustcnn import limits

    (tmp_path / "test_batch.bin").write_bytes(bytes(3073 * 4))
    assert load_cifar10("test", data_dir=tmp_path)[0].shape == (4, 3, 32, 32)
    monkeypatch.setattr(limits, "MAX_BYTES", 3073 * 3)
    with pytest.raises(ValueError, match="test_batch.bin: the batch takes 12,292 bytes"):
        load_cifar10("test", data_dir=tmp_path)


def test_input_shapes():
    assert input_shape("mnist") == input_shape("fashion-mnist") == (1, 28, 28)
    assert input_shape("cifar-10") == (3, 32, 32)
