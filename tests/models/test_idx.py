"""Tests for robustcnn.models.idx: round trips, every kind of malformed file, fuzzing."""

import gzip
import os
import re
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustcnn.models.idx import read_idx, write_idx

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
TYPE_CODE = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
             np.float32: 0x0D, np.float64: 0x0E}  # fmt: skip


def sample(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return (rng.standard_normal(shape) * 1e3).astype(dtype)


def idx_bytes(code, shape, data=b""):
    """Hand-built IDX bytes, independent of write_idx, for malformed inputs."""
    head = bytes([0, 0, code, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)
    return head + data


def put(path, content, gz=False):
    path.write_bytes(gzip.compress(content) if gz else content)
    return path


def raises_naming(path, *fragments):
    """pytest.raises(ValueError) whose message names the file and each fragment."""
    pattern = re.escape(str(path)) + ".*" + ".*".join(re.escape(f) for f in fragments)
    return pytest.raises(ValueError, match=re.compile(pattern, re.DOTALL))


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("shape", [(7,), (3, 5, 4), (2, 1, 3, 2), (0, 4)])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip(tmp_path, dtype, shape, gz):
    arr = sample(dtype, shape)
    path = tmp_path / "a.idx"
    write_idx(path, arr, gzip=gz)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == gz
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == shape
    # A serialisation round trip must be bit-exact, so compare the bytes (not float values).
    assert out.tobytes() == arr.tobytes()
    assert out.flags.writeable and out.flags.c_contiguous


def test_file_layout_is_big_endian(tmp_path):
    path = tmp_path / "a.idx"
    write_idx(path, np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int16), gzip=False)
    expected = idx_bytes(0x0B, (2, 3), b"\x00\x01\x00\x02\x00\x03\x00\x04\x00\x05\x00\x06")
    assert path.read_bytes() == expected


def test_gzip_detected_by_content_not_name(tmp_path):
    arr = sample(np.int32, (4, 3))
    write_idx(tmp_path / "compressed.idx", arr, gzip=True)
    write_idx(tmp_path / "plain.gz", arr, gzip=False)
    for name in ("compressed.idx", "plain.gz"):
        assert read_idx(tmp_path / name).tobytes() == arr.tobytes()


def test_gzip_default_follows_suffix(tmp_path):
    arr = sample(np.uint8, (5,))
    write_idx(tmp_path / "a.gz", arr)
    write_idx(tmp_path / "a.idx", arr)
    assert (tmp_path / "a.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert (tmp_path / "a.idx").read_bytes()[:4] == b"\x00\x00\x08\x01"


def test_write_accepts_big_endian_and_non_contiguous(tmp_path):
    arr = sample(np.float32, (4, 6))
    write_idx(tmp_path / "be", arr.astype(">f4"))
    write_idx(tmp_path / "t", arr.T)
    assert read_idx(tmp_path / "be").tobytes() == arr.tobytes()
    assert read_idx(tmp_path / "t").tobytes() == np.ascontiguousarray(arr.T).tobytes()


def test_read_returns_independent_copy(tmp_path):
    path = tmp_path / "a"
    write_idx(path, np.arange(6, dtype=np.uint8))
    a, b = read_idx(path), read_idx(path)
    a[0] = 99
    assert b[0] == 0


def test_gzip_output_is_deterministic(tmp_path):
    arr = sample(np.uint8, (10, 10))
    write_idx(tmp_path / "a.gz", arr)
    write_idx(tmp_path / "b.gz", arr)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


# --- write_idx: refusals and atomicity -------------------------------------------------------


@pytest.mark.parametrize(
    "arr, fragment",
    [
        (np.zeros(3, np.int64), "int64"),
        (np.zeros(3, bool), "bool"),
        (np.zeros(3, np.complex64), "complex64"),
        (np.zeros(3, np.uint16), "uint16"),
        (np.array(5, np.uint8), "0-dimensional"),
        (np.zeros((1,) * 9, np.uint8), "9-dimensional"),
    ],
)
def test_write_refuses(tmp_path, arr, fragment):
    path = tmp_path / "out.idx"
    with raises_naming(path, fragment):
        write_idx(path, arr)
    assert list(tmp_path.iterdir()) == []


def test_write_overwrites_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "a.idx"
    write_idx(path, np.zeros(3, np.uint8))
    write_idx(path, np.ones(4, np.int32))
    assert read_idx(path).tolist() == [1, 1, 1, 1]
    assert [p.name for p in tmp_path.iterdir()] == ["a.idx"]


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "a.idx"
    write_idx(path, np.arange(3, dtype=np.uint8))

    def broken_fsync(fd):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk on fire"):
        write_idx(path, np.zeros(100, np.uint8))
    assert read_idx(path).tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["a.idx"]


# --- read_idx: malformed files ---------------------------------------------------------------

GOOD = idx_bytes(0x0B, (2, 3), bytes(12))

MALFORMED = {
    "empty": (b"", ["truncated header", "found 0"]),
    "short magic": (b"\x00\x00", ["truncated header", "found 2"]),
    "nonzero first bytes": (b"\x01\x00" + GOOD[2:], ["bad magic number 0x01000B02"]),
    "unknown type code": (b"\x00\x00\x0a" + GOOD[3:], ["unknown type code 0x0A"]),
    "zero dims": (b"\x00\x00\x08\x00" + bytes(8), ["0 dimensions", "expected 1 to 8"]),
    "nine dims": (idx_bytes(0x08, (1,) * 9, b"\x00"), ["9 dimensions", "expected 1 to 8"]),
    "truncated sizes": (GOOD[:9], ["truncated header", "need 8 bytes", "found 5"]),
    "truncated data": (GOOD[:-1], ["truncated data", "needs 12 bytes", "found 11"]),
    "trailing bytes": (GOOD + b"xyz", ["3 trailing bytes", "needs 12 bytes"]),
    "too big for numpy": (idx_bytes(0x08, (0, 2**32 - 1, 2**32 - 1, 2**32 - 1)), ["too large"]),
}


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed(tmp_path, case, gz):
    content, fragments = MALFORMED[case]
    if gz and case == "trailing bytes":
        fragments = ["at least 1 trailing bytes", "needs 12 bytes"]  # stream read is capped
    path = put(tmp_path / "bad.idx", content, gz)
    with raises_naming(path, *fragments):
        read_idx(path)


def test_corrupt_gzip(tmp_path):
    packed = bytearray(gzip.compress(GOOD))
    packed[-6] ^= 0xFF  # inside the CRC32 / length trailer
    path = put(tmp_path / "crc.gz", bytes(packed))
    with raises_naming(path, "corrupt or truncated gzip"):
        read_idx(path)

    packed = bytearray(gzip.compress(GOOD))
    packed[12] ^= 0xFF  # the deflate block header
    path = put(tmp_path / "deflate.gz", bytes(packed))
    with raises_naming(path, "corrupt or truncated gzip"):
        read_idx(path)


@pytest.mark.parametrize("cut", [4, 8, 15])
def test_truncated_gzip(tmp_path, cut):
    path = put(tmp_path / "cut.gz", gzip.compress(GOOD)[:-cut])
    with raises_naming(path, "corrupt or truncated gzip"):
        read_idx(path)


def test_gzip_with_trailing_garbage(tmp_path):
    path = put(tmp_path / "junk.gz", gzip.compress(GOOD) + b"garbage!")
    with raises_naming(path):
        read_idx(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_absurd_size_does_not_allocate(tmp_path, gz):
    # 2**31 x 2**31 float64 = 2**65 bytes declared, a few bytes present.
    path = put(tmp_path / "huge.idx", idx_bytes(0x0E, (2**31, 2**31), bytes(64)), gz)
    tracemalloc.start()
    try:
        with raises_naming(path, "truncated data", f"needs {2**65} bytes", "found 64"):
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # gzip's own buffers and one read chunk at most


def test_absurd_size_with_large_gzip_payload_reads_only_what_exists(tmp_path):
    # 4 MiB of zeros compress to ~4 KiB; memory must follow the 4 MiB, not the 2**62 declared.
    path = put(tmp_path / "bomb.gz", idx_bytes(0x08, (2**31, 2**31), bytes(4 * 2**20)), gz=True)
    with raises_naming(path, "truncated data", f"found {4 * 2**20}"):
        read_idx(path)


# --- fuzzing ---------------------------------------------------------------------------------

SEEDS = {
    "u1-raw": (sample(np.uint8, (2, 3, 4)), False),
    "f8-raw": (sample(np.float64, (5,)), False),
    "i2-gz": (sample(np.int16, (3, 2)), True),
    "u1-gz": (sample(np.uint8, (4, 4)), True),
}


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(sorted(SEEDS)),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
    extra=st.binary(max_size=4),
)
def test_fuzzed_files_raise_only_value_error(fuzz_dir, seed, flips, cut, extra):
    arr, gz = SEEDS[seed]
    path = fuzz_dir / "f.idx"
    write_idx(path, arr, gzip=gz)
    content = bytearray(path.read_bytes())
    for pos, mask in flips:
        content[pos % len(content)] ^= mask
    if cut is not None:
        content = content[: cut % (len(content) + 1)]
    path.write_bytes(bytes(content) + extra)
    try:
        out = read_idx(path)
    except ValueError as exc:
        assert str(path) in str(exc)
    else:
        assert isinstance(out, np.ndarray) and out.dtype.isnative
