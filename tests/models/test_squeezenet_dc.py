"""Tests for robustcnn.models.squeezenet_dc: the Deep Compression file reader (real file,
hand-encoded files, damaged files), the densified SqueezeNet against the same net in torch, and
its top-5 on two real photos. (The prototxt reader's tests are tests/models/caffe/
test_prototxt.py.)"""

import hashlib
import re
import struct

import numpy as np
import pytest

from helpers import assert_close
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from robustcnn.engine import softmax_forward
from robustcnn.engine.checkpoint import load_net, save_checkpoint
from robustcnn.models.caffe import load_caffe
from robustcnn.models.squeezenet_dc import (MODEL_DIR, PROTOTXT, WEIGHTS, WEIGHTS_SHA256,
                                            caffe_input, densify, imagenet_classes,
                                            load_deep_compression_arrays, read_deep_compression,
                                            squeezenet_v1_0_deep_compression, top_k,
                                            weight_shapes)

N_LAYERS = 26
N_STORED = 422083  # the sum of the file's uint32 header
N_FILLERS = 6162  # stored entries with code 0 (each bridges a gap of 16)
N_WEIGHTS = 1244448  # conv weights; 1,248,424 parameters with the biases

# SqueezeNet v1.0 (Iandola et al. 2016, Table 1): fire → (squeeze, expand 1×1, expand 3×3).
FIRES = {2: (16, 64, 64), 3: (16, 64, 64), 4: (32, 128, 128), 5: (32, 128, 128),
         6: (48, 192, 192), 7: (48, 192, 192), 8: (64, 256, 256), 9: (64, 256, 256)}


def raises_naming(*fragments):
    """pytest.raises(ValueError) whose message contains each fragment, in order."""
    pattern = ".*".join(re.escape(str(f)) for f in fragments)
    return pytest.raises(ValueError, match=re.compile(pattern, re.DOTALL))


@pytest.fixture(scope="module")
def layers():
    return load_deep_compression_arrays()


@pytest.fixture(scope="module")
def net():
    return squeezenet_v1_0_deep_compression(dense=True)


@pytest.fixture(scope="module")
def photos():
    """Chelsea the cat and a cup of coffee, as Caffe saw ImageNet: warped to 256×256 (bilinear,
    anti-aliased), centre crop 227, BGR, 0–255 minus the mean → (2, 3, 227, 227)."""
    data = pytest.importorskip("skimage.data",
                               reason="scikit-image (in the test extra) ships the photos")
    from skimage.transform import resize

    images = [resize(img, (256, 256), order=1, anti_aliasing=True, preserve_range=True)
              for img in (data.chelsea(), data.coffee())]
    return caffe_input(np.stack(images))


# --- the packaged files ----------------------------------------------------------------------


def test_packaged_file_matches_the_recorded_sha256():
    recorded = re.search(r"\b[0-9a-f]{64}\b", (MODEL_DIR / "SOURCE.md").read_text()).group()
    digest = hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
    assert digest == recorded == WEIGHTS_SHA256
    assert "BSD" in (MODEL_DIR / "LICENCE").read_text()


def test_class_names():
    classes = imagenet_classes()
    wnids = [w for w, _ in classes]
    assert len(set(wnids)) == 1000 and wnids == sorted(wnids)  # Caffe's order: sorted WNIDs
    assert classes[281] == ("n02123045", "tabby, tabby cat")
    assert classes[967][1] == "espresso" and classes[504][1] == "coffee mug"


# --- the Deep Compression file ---------------------------------------------------------------


def test_file_layout_facts(layers):
    data = WEIGHTS.read_bytes()
    header = struct.unpack(f"<{N_LAYERS}I", data[:4 * N_LAYERS])
    assert len(layers) == N_LAYERS
    assert [l.nnz for l in layers.values()] == list(header)
    assert sum(header) == N_STORED
    for name, l in layers.items():
        assert l.bits == 8 and l.centroids.shape == (256,) and l.bias.shape == (l.shape[0],)
        assert l.codes.dtype == l.gaps.dtype == np.uint8 and l.positions.dtype == np.int64
        assert int(l.gaps.max()) <= 15
        assert np.all(np.diff(l.positions) > 0)
        assert 0 <= l.positions[0] and l.positions[-1] < l.size
        # Fillers (code 0) take codebook[0], and unstored weights too: it must be exactly zero.
        assert l.centroids[0] == 0.0, name  # a stored bit pattern, not a computed value
    assert sum(l.fillers for l in layers.values()) == N_FILLERS
    assert sum(l.size for l in layers.values()) == N_WEIGHTS
    assert sum(np.count_nonzero(densify(l)) for l in layers.values()) == N_STORED - N_FILLERS


def test_shapes_follow_the_prototxt_and_the_paper(layers):
    assert {n: l.shape for n, l in layers.items()} == weight_shapes(load_caffe(PROTOTXT))
    expected, channels = {"conv1": (96, 3, 7, 7)}, 96
    for i, (s, e1, e3) in FIRES.items():
        expected[f"fire{i}/conv1x1_1"] = (s, channels, 1, 1)
        expected[f"fire{i}/conv1x1_2"] = (e1, s, 1, 1)
        expected[f"fire{i}/conv3x3_2"] = (e3, s, 3, 3)
        channels = e1 + e3
    expected["conv_final"] = (1000, 512, 1, 1)
    assert {n: l.shape for n, l in layers.items()} == expected
    assert list(layers) == list(expected)  # the file's order


def reference_decode(path, shapes):
    """decode.py's algorithm read straight off the bytes, one entry at a time (8-bit codes)."""
    data = path.read_bytes()
    counts = struct.unpack_from(f"<{len(shapes)}I", data)
    at, out = 4 * len(shapes), {}
    for (name, shape), nnz in zip(shapes.items(), counts):
        codebook = struct.unpack_from("<256f", data, at)
        at += 4 * 256
        bias = struct.unpack_from(f"<{shape[0]}f", data, at)
        at += 4 * shape[0]
        codes, at = data[at:at + nnz], at + nnz
        gap_bytes, at = data[at:at + (nnz + 1) // 2], at + (nnz + 1) // 2
        w, pos = [codebook[0]] * int(np.prod(shape)), -1
        for k in range(nnz):
            pos += (gap_bytes[k // 2] >> (4 * (k % 2)) & 15) + 1
            w[pos] = codebook[codes[k]]
        out[name] = (np.array(w, dtype=np.float32).reshape(shape), np.array(bias, np.float32))
    assert at == len(data)
    return out


def test_densify_matches_a_reference_decoder(layers):
    shapes = {n: l.shape for n, l in layers.items()}
    for name, (w, b) in reference_decode(WEIGHTS, shapes).items():
        assert densify(layers[name]).tobytes() == w.tobytes(), name  # same float32 bits
        assert layers[name].bias.tobytes() == b.tobytes(), name


def encode(weights, bits):
    """A Deep Compression file from {name: (weight, codebook, bias)}: an encoder written from the
    format description, independent of the reader. Zeros are skipped, long runs of zeros get
    filler entries, codes are the index of the weight's value in the codebook."""
    header, body = [], b""
    for w, codebook, bias in weights.values():
        flat = w.reshape(-1)
        codes, gaps, last = [], [], -1
        for p in np.flatnonzero(flat):
            while p - last > 16:  # a filler entry bridges 16 positions
                codes.append(0), gaps.append(15)
                last += 16
            codes.append(int(np.flatnonzero(codebook == flat[p])[0])), gaps.append(p - last - 1)
            last = p
        header.append(len(codes))

        def nibbles(vals):
            vals = vals + [0] * (len(vals) % 2)
            return bytes(lo | hi << 4 for lo, hi in zip(vals[0::2], vals[1::2]))

        code_bytes = bytes(codes) if bits == 8 else nibbles(codes)
        body += (codebook.astype("<f4").tobytes() + bias.astype("<f4").tobytes() + code_bytes
                 + nibbles(gaps))
    return struct.pack(f"<{len(header)}I", *header) + body


def small_model(rng, bits):
    """Two layers with a 2^bits codebook (codebook[0] = 0), ~70% zeros and a long zero run."""
    model = {}
    for name, shape in (("conv_a", (6, 3, 3, 3)), ("ip_b", (5, 40))):
        codebook = np.concatenate([[0.0], rng.standard_normal((1 << bits) - 1)]).astype(np.float32)
        idx = rng.integers(1, 1 << bits, size=shape) * (rng.random(shape) < 0.3)
        idx.reshape(-1)[20:90] = 0  # a run of 70 zeros: several fillers
        model[name] = (codebook[idx], codebook, rng.standard_normal(shape[0]).astype(np.float32))
    return model


@pytest.mark.parametrize("bits", [8, 4])
def test_round_trip_of_hand_encoded_files(tmp_path, bits):
    model = small_model(np.random.default_rng(bits), bits)
    path = tmp_path / "small.net"
    path.write_bytes(encode(model, bits))
    shapes = {n: w.shape for n, (w, _, _) in model.items()}
    got = read_deep_compression(path, shapes, bits=bits)
    assert list(got) == list(model)
    for name, (w, codebook, bias) in model.items():
        assert got[name].bits == bits and got[name].fillers >= 4
        assert densify(got[name]).tobytes() == w.tobytes()
        assert got[name].centroids.tobytes() == codebook.tobytes()
        assert got[name].bias.tobytes() == bias.tobytes()
    # decode.py's own rule picks the width from the name: 8 for 'conv', 4 otherwise.
    if bits == 4:
        with raises_naming(path):
            read_deep_compression(path, shapes)


# --- damaged files ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes(layers):
    return {n: l.shape for n, l in layers.items()}


@pytest.mark.parametrize("keep", [0, 50, 4 * N_LAYERS + 100, 200_000, -1])
def test_truncated_file(tmp_path, shapes, keep):
    path = tmp_path / "cut.net"
    path.write_bytes(WEIGHTS.read_bytes()[:keep])
    with raises_naming(path, "truncated"):
        read_deep_compression(path, shapes)


def test_truncated_file_names_the_layer(tmp_path, shapes):
    path = tmp_path / "cut.net"
    path.write_bytes(WEIGHTS.read_bytes()[:4 * N_LAYERS + 100])
    with raises_naming(path, "conv1", "needs", "bytes"):
        read_deep_compression(path, shapes)


def test_trailing_bytes(tmp_path, shapes):
    path = tmp_path / "long.net"
    path.write_bytes(WEIGHTS.read_bytes() + b"\0")
    with raises_naming(path, "1 trailing byte"):
        read_deep_compression(path, shapes)


@pytest.mark.parametrize("delta", [1, -1, 2, 1 << 20, 1 << 31])
@pytest.mark.parametrize("index", [0, 3, 12, N_LAYERS - 1])
def test_changed_count(tmp_path, shapes, index, delta):
    data = bytearray(WEIGHTS.read_bytes())
    count = struct.unpack_from("<I", data, 4 * index)[0]
    struct.pack_into("<I", data, 4 * index, (count + delta) % (1 << 32))
    path = tmp_path / "count.net"
    path.write_bytes(bytes(data))
    with raises_naming(path):
        read_deep_compression(path, shapes)


def test_every_count_off_by_one_is_caught(tmp_path, shapes):
    original = WEIGHTS.read_bytes()
    path = tmp_path / "count.net"
    for index in range(N_LAYERS):
        data = bytearray(original)
        data[4 * index] ^= 1  # flip the low bit of the count
        path.write_bytes(bytes(data))
        with raises_naming(path):
            read_deep_compression(path, shapes)


def test_count_larger_than_the_weight(tmp_path, shapes):
    data = bytearray(WEIGHTS.read_bytes())
    struct.pack_into("<I", data, 0, 96 * 3 * 7 * 7 + 1)
    path = tmp_path / "big.net"
    path.write_bytes(bytes(data))
    with raises_naming(path, "conv1", "14113 stored entries", "14112 weights"):
        read_deep_compression(path, shapes)


def test_position_past_the_weight(tmp_path, shapes):
    small = dict(shapes)
    small["conv_final"] = (1000, 256, 1, 1)  # the file's gaps run past 256,000 weights
    with raises_naming(WEIGHTS, "conv_final", "past the 256000 weights"):
        read_deep_compression(WEIGHTS, small)


def test_wrong_shape_or_layer_count(shapes):
    with raises_naming(WEIGHTS):  # 25 counts: the 26th is read as conv1's codebook
        read_deep_compression(WEIGHTS, dict(list(shapes.items())[:-1]))
    with raises_naming(WEIGHTS):
        read_deep_compression(WEIGHTS, dict(shapes, conv1=(64, 3, 7, 7)))


def test_non_finite_codebook_and_padding_nibble(tmp_path):
    for seed in range(20):  # a sample whose first layer stores an odd number of entries
        model = small_model(np.random.default_rng(seed), 4)
        data = bytearray(encode(model, 4))
        n_a = struct.unpack_from("<I", data, 0)[0]
        if n_a % 2:
            break
    assert n_a % 2
    path = tmp_path / "bad.net"
    shapes = {n: w.shape for n, (w, _, _) in model.items()}
    bad = bytearray(data)
    struct.pack_into("<f", bad, 8 + 4 * 3, np.nan)  # conv_a's codebook[3]
    path.write_bytes(bytes(bad))
    with raises_naming(path, "conv_a", "codebook", "non-finite"):
        read_deep_compression(path, shapes, bits=4)
    end = 8 + 4 * 16 + 4 * 6 + (n_a + 1) // 2  # conv_a's code stream ends here
    for stream, last in (("code", end - 1), ("gap", end + (n_a + 1) // 2 - 1)):
        bad = bytearray(data)
        bad[last] |= 0xF0  # the unused high nibble of an odd-length 4-bit stream
        path.write_bytes(bytes(bad))
        with raises_naming(path, "conv_a", f"{stream} stream", "nibble"):
            read_deep_compression(path, shapes, bits=4)


SMALL_FILE = {bits: encode(small_model(np.random.default_rng(bits), bits), bits) for bits in (4, 8)}


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bits=st.sampled_from([4, 8]), edits=st.lists(st.tuples(st.integers(0, 10**6),
                                                              st.integers(0, 255)), max_size=4),
       cut=st.integers(-40, 1))
def test_damaged_small_files_raise_value_error_or_read_in_range(tmp_path, bits, edits, cut):
    data = bytearray(SMALL_FILE[bits])
    for where, byte in edits:
        data[where % len(data)] = byte
    if cut < 1:
        data = data[:len(data) + cut]
    path = tmp_path / "fuzz.net"
    path.write_bytes(bytes(data))
    try:
        got = read_deep_compression(path, {"conv_a": (6, 3, 3, 3), "ip_b": (5, 40)}, bits=bits)
    except ValueError as e:
        assert str(path) in str(e)
        return
    for layer in got.values():  # whatever was read is consistent
        assert layer.nnz == 0 or layer.positions[-1] < layer.size
        assert densify(layer).shape == layer.shape


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_deep_compression(tmp_path / "none.net", {"conv1": (1, 1, 1, 1)})


def test_caffe_input():
    image = np.zeros((230, 240, 3), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30  # R, G, B
    image[1, 6, 0] = 200  # the crop's top-left pixel (rows 1…227, columns 6…232)
    x = caffe_input(image)
    assert x.shape == (1, 3, 227, 227) and x.dtype == np.float32
    assert_close(x[0, :, 5, 5], [30 - 104, 20 - 117, 10 - 123], 0, "BGR minus the mean")
    assert_close(x[0, 2, 0, 0], 200 - 123, 0, "the crop's corner")
    assert caffe_input(np.stack([image] * 2)).shape == (2, 3, 227, 227)
    with pytest.raises(ValueError, match="smaller than the 227×227 crop"):
        caffe_input(image[:200])
    with pytest.raises(ValueError, match="RGB images"):
        caffe_input(image[..., :2])


# --- the densified SqueezeNet ----------------------------------------------------------------


def test_squeezenet_net(net, layers):
    assert net.input_shape == (3, 227, 227) and net.output_shape == (1000, 1, 1)
    assert net.num_params() == 1248424
    for name, l in layers.items():
        assert net[name].params["weight"].tobytes() == densify(l).tobytes()
        assert net[name].params["bias"].tobytes() == l.bias.tobytes()


@pytest.fixture(scope="module")
def compressed_net():
    return squeezenet_v1_0_deep_compression()


def test_compressed_net_reads_the_file_into_sparse_codebook_weights(compressed_net, layers):
    for name, l in layers.items():
        fmt = compressed_net[name].weight_format
        assert fmt.kind == "sparse_codebook" and fmt.count == l.nnz and fmt.fillers() == l.fillers
        codes, gaps, positions = fmt.entries()
        # The stored streams themselves, not a re-encoding of the dense weight (exact: storage).
        np.testing.assert_array_equal(codes, l.codes)
        np.testing.assert_array_equal(gaps, l.gaps)
        np.testing.assert_array_equal(fmt.centroids, l.centroids)
        assert fmt.to_dense().tobytes() == densify(l).tobytes()
        assert compressed_net[name].params["bias"].tobytes() == l.bias.tobytes()
    # Stored weight bytes: 8-bit codes and 4-bit gaps of 422,083 entries plus 26 codebooks.
    stored = sum(compressed_net[n].weight_format.stored_bytes() for n in layers)
    entries = sum(l.nnz for l in layers.values())
    assert entries == 422083
    assert stored == sum((l.nnz * 8 + 7) // 8 + (l.nnz * 4 + 7) // 8 + 256 * 4 + 14
                         for l in layers.values())


def test_compressed_forward_equals_the_densified_forward(compressed_net, net):
    x = np.random.default_rng(3).normal(0, 50, size=(2, 3, 227, 227)).astype(np.float32)
    dense = net.forward(x)
    np.testing.assert_allclose(compressed_net.forward(x), dense, rtol=0,
                               atol=1e-5 * np.abs(dense).max())


def test_slash_names_survive_state_dict_and_checkpoints(tmp_path, net):
    state = net.state_dict()
    assert "fire2/conv1x1_1/weight" in state and "conv_final/bias" in state
    save_checkpoint(tmp_path / "sq.h5", net)
    again, _ = load_net(tmp_path / "sq.h5")
    assert [l.name for l in again.layers] == [l.name for l in net.layers]
    assert sorted(again.state_dict()) == sorted(state)
    for key, value in again.state_dict().items():
        assert value.tobytes() == state[key].tobytes(), key


def torch_squeezenet(layers, dtype):
    """SqueezeNet v1.0 written in torch from the paper's table (not from the prototxt)."""
    import torch
    import torch.nn.functional as F

    p = {n: (torch.from_numpy(densify(l)).to(dtype), torch.from_numpy(l.bias).to(dtype))
         for n, l in layers.items()}

    def conv(x, name, pad=0, stride=1):
        return F.relu(F.conv2d(x, *p[name], stride=stride, padding=pad))

    def forward(x):
        x = F.max_pool2d(conv(x, "conv1", stride=2), 3, 2, ceil_mode=True)
        for i, (s, e1, e3) in FIRES.items():
            assert p[f"fire{i}/conv1x1_1"][0].shape[0] == s
            assert p[f"fire{i}/conv1x1_2"][0].shape[0] == e1
            assert p[f"fire{i}/conv3x3_2"][0].shape[0] == e3
            squeeze = conv(x, f"fire{i}/conv1x1_1")
            x = torch.cat([conv(squeeze, f"fire{i}/conv1x1_2"),
                           conv(squeeze, f"fire{i}/conv3x3_2", pad=1)], dim=1)
            if i in (4, 8):
                x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        x = conv(x, "conv_final", pad=1)  # SqueezeNet v1.0's conv10 is padded (13×13 → 15×15)
        return x.mean(dim=(2, 3))

    return forward


def test_forward_matches_torch(net, layers, request):
    torch = pytest.importorskip("torch", reason="torch (test extra) is the reference")
    x = np.random.default_rng(0).uniform(-120, 150, (1, 3, 227, 227)).astype(np.float32)
    try:
        x = np.concatenate([request.getfixturevalue("photos"), x])
    except pytest.skip.Exception:  # no scikit-image: the random input alone
        pass
    with torch.no_grad():
        ref64 = torch_squeezenet(layers, torch.float64)(torch.from_numpy(x).double()).numpy()
        ref32 = torch_squeezenet(layers, torch.float32)(torch.from_numpy(x)).numpy()
    got = net.logits(x)
    err_engine, err_torch = np.abs(got - ref64).max(), np.abs(ref32 - ref64).max()
    print(f"\nlogit scale {np.abs(ref64).max():.3g}; max |engine f32 − torch f64| "
          f"{err_engine:.3g}, max |torch f32 − torch f64| {err_torch:.3g}")
    assert_close(got, ref64, 1e-5, "SqueezeNet logits vs torch float64")
    assert err_engine <= 4 * err_torch + 1e-6  # no worse than torch's own float32 rounding


@pytest.mark.parametrize("which", ["compressed", "densified"])
def test_top5_on_photos(which, compressed_net, net, photos):
    # The compressed net computes on the file's sparse-codebook weights as stored.
    probs = softmax_forward((compressed_net if which == "compressed" else net).logits(photos))
    classes = imagenet_classes()
    cat, coffee = (top_k(p, 5, classes) for p in probs)
    for title, top in (("chelsea", cat), ("coffee", coffee)):
        print(f"\n{title}: " + "; ".join(f"{i} {n.split(',')[0]} {p:.3f}" for i, n, p in top))
    assert 281 <= cat[0][0] <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert sum(281 <= i <= 285 for i, _, _ in cat) >= 3
    assert cat[0][2] > 0.5
    assert coffee[0][0] in (967, 968, 504)  # espresso, cup, coffee mug
    assert coffee[0][2] > 0.5


def test_the_model_says_what_its_images_are():
    """Issue 15 point 7: the Deep Compression SqueezeNet carries its preprocessing (resize to
    256, centre crop 227, BGR minus the mean) and bounds; with the preprocessing in front it
    takes RGB 0–255 crops and computes what caffe_input's output gives the bare net."""
    from robustcnn.models.squeezenet_dc import caffe_input, squeezenet_v1_0_deep_compression

    net = squeezenet_v1_0_deep_compression()
    assert net.bounds == (0.0, 255.0)
    assert net.preprocessing == {"mean": [104.0, 117.0, 123.0], "channel_order": "bgr",
                                 "resize": [256, 256], "crop": 227}
    rgb = np.random.default_rng(0).integers(0, 256, (1, 227, 227, 3)).astype(np.float32)
    images = np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))
    assert_close(net.with_preprocessing().forward(images), net.forward(caffe_input(rgb)),
                 1e-4, "preprocessing in front vs caffe_input")
