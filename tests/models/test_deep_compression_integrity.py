"""The packaged Deep Compression file is checked against its known SHA-256 whenever it is read,
by path or as robustcnn.load's weights."""

import shutil

import pytest

import robustcnn
from robustcnn.models import squeezenet_dc
from robustcnn.models.squeezenet_dc import (PROTOTXT, WEIGHTS, WEIGHTS_SHA256,
                                            read_deep_compression, weight_shapes)


def test_the_packaged_file_matches_its_known_digest():
    assert squeezenet_dc.is_packaged_weights(WEIGHTS)
    layers = read_deep_compression(WEIGHTS, weight_shapes(squeezenet_dc._architecture()))
    assert len(layers) == 26


def test_a_flipped_bit_in_the_packaged_file_is_refused(tmp_path, monkeypatch):
    damaged = tmp_path / "compressed_SqueezeNet.net"
    shutil.copy(WEIGHTS, damaged)
    data = bytearray(damaged.read_bytes())
    data[4 * 26 + 4 * 5] ^= 0x01  # the lowest bit of conv1's 6th centroid: still a valid file
    damaged.write_bytes(bytes(data))
    shapes = weight_shapes(squeezenet_dc._architecture())
    monkeypatch.setattr(squeezenet_dc, "WEIGHTS", damaged)  # the damaged file is "packaged"
    with pytest.raises(ValueError, match=f"{damaged}: SHA-256 [0-9a-f]+ is not the known "
                                         f"{WEIGHTS_SHA256}"):
        read_deep_compression(damaged, shapes)
    with pytest.raises(ValueError, match="is not the known"):
        squeezenet_dc.squeezenet_v1_0_deep_compression()
    with pytest.raises(ValueError, match="is not the known"):
        robustcnn.load(PROTOTXT, weights=damaged)
    # Another file of the layout is read as it is (its digest is not known) unless one is given.
    monkeypatch.undo()
    assert len(read_deep_compression(damaged, shapes)) == 26
    with pytest.raises(ValueError, match="is not the known"):
        read_deep_compression(damaged, shapes, sha256=WEIGHTS_SHA256)
