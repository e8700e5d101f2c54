"""engine/formats/cm.py and cm_codebook.py: the context-mixing coder against a plain-Python
coder of the same model written from the module's equations (dicts and Python ints, no shared
code but the two tables' definitions), round trips on random (hypothesis) and adversarial
streams, truncated, corrupt and hostile streams refused with one-line errors, and the cm-coded
sparse codebook against the dense kernels, through a model file, and bit for bit against the
Huffman-coded net."""

import math
import re

import numpy as np
import pytest
from format_checks import (CONV_CASES, check_conv_format, check_linear_format, conv_setup,
                           sparse_centroid_sums as centroid_sums,
                           skewed_codebook_weight as weight)
from hypothesis import given, settings
from hypothesis import strategies as st

from robustcnn.engine.formats import (FORMATS, CmCodebookWeight, HuffmanCodebookWeight,
                                      SparseCodebookWeight, cm)

LAYER = "conv2 (Convolution)"
FAST = settings(max_examples=40, deadline=None, derandomize=True)


# ---------------------------------------------------------------------------------------------
# The model and coder written out from the module docstring, in plain Python


POINTS = [round(4096 / (1 + math.exp(-(k - 16) / 2))) for k in range(33)]


def py_squash(d):
    """4096 / (1 + e^{−d/256}) by linear interpolation between the logistic's 33 points."""
    d = min(max(d, -2047), 2047) + 2048
    k, w = d // 128, d % 128
    return (POINTS[k] * (128 - w) + POINTS[min(k + 1, 32)] * w + 64) // 128


SQUASHED = [py_squash(d) for d in range(-2047, 2048)]


def py_stretch(p):
    """The smallest d with squash(d) ≥ p, 2047 past the top."""
    return next((d - 2047 for d, q in enumerate(SQUASHED) if q >= p), 2047)


STRETCHED = [py_stretch(p) for p in range(4096)]


def py_hash(a, b, c):
    m = 0x7FFFFFFF
    h = (a * 0x2F0B4A13 + 0x1234567) & m
    h = ((h ^ (b & m)) * 0x5BD1E995) & m
    h = ((h ^ (c & m)) * 0x3C6EF35F) & m
    return h ^ (h >> 15)


class PyModel:
    """The context models, the mixer and the SSE map of cm.py, each slot created on first use."""

    def __init__(self, code_bits, gap_bits, ncols, period):
        self.B = max(code_bits, gap_bits)
        self.bits = (gap_bits, code_bits)
        self.ncols, self.period = ncols, period
        self.counters = {}  # (context, slot) → [p16, n]
        self.weights = {}  # (S, depth) → 8 weights (16 fractional bits)
        self.sse = {}  # (S, node, c1) → 33 bucket values (16 bits)
        self.stretch = STRETCHED
        self.squash = {d: SQUASHED[d + 2047] for d in range(-2047, 2048)}

    def blocks(self, S, c1, g, at):
        col = at % self.ncols
        bucket = col % self.period if self.period > 1 else col * 64 // self.ncols
        values = [S, S * 256 + c1, py_hash(2 + S, at // self.ncols, 0) >> 19, S * 256 + g,
                  S * 256 + bucket,
                  S * 2048 + col if self.ncols <= 2048 else py_hash(5 + S, col, 0) >> 19,
                  py_hash(7 + S, c1, g) >> 19]
        return [(v & 4095) << self.B for v in values]

    def predict(self, S, depth, node, c1, blocks):
        self.keys = [(i, b + node) for i, b in enumerate(blocks)]
        probs = [self.counters.get(k, [32768, 0])[0] for k in self.keys]
        self.st = [self.stretch[p >> 4] for p in probs] + [256]
        w = self.weights.setdefault((S, depth), [1 << 14] * 7 + [0])
        self.wkey = (S, depth)
        self.pm = self.squash[min(max(sum(a * b for a, b in zip(w, self.st)) >> 16, -2047), 2047)]
        self.skey = (S, node, c1)
        buckets = self.sse.setdefault(self.skey, [self.squash[min(max((j - 16) * 128, -2047),
                                                                      2047)] * 16
                                                  for j in range(33)])
        s = self.stretch[self.pm] + 2048
        self.lo, self.w = s >> 7, s & 127
        ps = (buckets[self.lo] * (128 - self.w) + buckets[self.lo + 1] * self.w) >> 11
        return min(max((self.pm + 3 * ps) >> 2, 1), 4095)

    def update(self, bit):
        for k in self.keys:
            p16, n = self.counters.get(k, [32768, 0])
            rate = 131072 // (2 * n + 3)
            p16 = p16 + (((65535 - p16) * rate) >> 16) if bit else p16 - ((p16 * rate) >> 16)
            self.counters[k] = [p16, min(n + 1, 255)]
        err = ((bit << 12) - self.pm) * 8
        w = self.weights[self.wkey]
        for i in range(8):
            w[i] = min(max(w[i] + ((self.st[i] * err) >> 13), -(1 << 22)), 1 << 22)
        b = self.sse[self.skey]
        b[self.lo] += (((bit << 16) - b[self.lo]) * (128 - self.w)) >> 13
        b[self.lo + 1] += (((bit << 16) - b[self.lo + 1]) * self.w) >> 13


def py_code(entries, code_bits, gap_bits, ncols, period, data=None):
    """Encode [(gap, code)] → bytes; or, given ``data``, decode len(entries) entries → list."""
    model = PyModel(code_bits, gap_bits, ncols, period)
    x1, x2, out = 0, 0xFFFFFFFF, bytearray()
    x, pos = (int.from_bytes(data[:4], "big"), 4) if data is not None else (0, 0)
    decoded, c1, prev_gap, nxt = [], 0, 0, 0
    for gap_in, code_in in entries:
        got = []
        for S, sym_in in ((0, gap_in), (1, code_in)):
            g, at = (prev_gap, nxt) if S == 0 else (got[0], nxt + got[0])
            blocks = model.blocks(S, c1, g, at)
            node, bits = 1, model.bits[S]
            for b in range(bits - 1, -1, -1):
                p = model.predict(S, bits - 1 - b, node, c1, blocks)
                xmid = x1 + ((x2 - x1) >> 12) * p
                bit = int(x <= xmid) if data is not None else (sym_in >> b) & 1
                x1, x2 = (x1, xmid) if bit else (xmid + 1, x2)
                while (x1 ^ x2) & 0xFF000000 == 0:
                    if data is not None:
                        x = ((x << 8) & 0xFFFFFFFF) | data[pos]
                        pos += 1
                    else:
                        out.append(x2 >> 24)
                    x1, x2 = (x1 << 8) & 0xFFFFFFFF, ((x2 << 8) & 0xFFFFFFFF) | 255
                model.update(bit)
                node = 2 * node + bit
            got.append(node - (1 << bits))
        c1, prev_gap = got[1], got[0]
        nxt += got[0] + 1
        decoded.append(tuple(got))
    if data is not None:
        assert x == x1 and pos == len(data)
        return decoded
    return bytes(out + x1.to_bytes(4, "big"))


def test_tables_are_the_logistic_and_its_inverse():
    assert list(cm.SQUASH_POINTS) == POINTS
    squash, stretch = cm.squash_table(), cm.stretch_table()
    d = np.arange(-2047, 2048)
    # chords of the logistic at steps of 1/2: error ≤ max|f''|·(1/2)²/8 ≈ 4096·0.0962/32 = 12.3
    assert np.abs(squash - 4096 / (1 + np.exp(-d / 256))).max() < 13
    assert (np.diff(squash) >= 0).all() and (np.diff(stretch) >= 0).all()
    assert SQUASHED == squash.tolist()
    p = np.arange(4096)
    inside = p <= squash[-1]
    assert (squash[stretch[inside] + 2047] >= p[inside]).all()
    assert STRETCHED == stretch.tolist()


def _entries(rng, n, code_bits, gap_bits, skew=0.5):
    codes = np.minimum(rng.geometric(skew, n) - 1, (1 << code_bits) - 1)
    gaps = np.minimum(rng.geometric(skew, n) - 1, (1 << gap_bits) - 1)
    return codes, gaps


@pytest.mark.parametrize("code_bits, gap_bits, ncols, period, n",
                         [(3, 2, 7, 1, 150), (8, 4, 27, 9, 120), (5, 5, 3000, 1, 100),
                          (1, 1, 1, 1, 60)])
def test_matches_the_plain_python_coder(code_bits, gap_bits, ncols, period, n):
    codes, gaps = _entries(np.random.default_rng(n), n, code_bits, gap_bits)
    data = cm.encode(codes, gaps, code_bits, gap_bits, ncols, period)
    entries = list(zip(gaps.tolist(), codes.tolist()))
    assert data.tobytes() == py_code(entries, code_bits, gap_bits, ncols, period)
    assert py_code([(0, 0)] * n, code_bits, gap_bits, ncols, period, data.tobytes()) == entries
    c, g = cm.decode(data, n, code_bits, gap_bits, ncols, period)
    assert np.array_equal(c, codes) and np.array_equal(g, gaps)


def round_trip(codes, gaps, code_bits, gap_bits, ncols=16, period=1, ranks=None):
    data = cm.encode(codes, gaps, code_bits, gap_bits, ncols, period, ranks=ranks)
    assert data.dtype == np.uint8 and data.size >= cm.STATE_BYTES
    c, g = cm.decode(data, len(codes), code_bits, gap_bits, ncols, period, ranks=ranks)
    assert np.array_equal(c, codes) and np.array_equal(g, gaps)
    assert c.dtype == g.dtype == np.uint8
    return data


@FAST
@given(st.integers(1, 8), st.integers(1, 8), st.integers(1, 5000), st.integers(1, 30),
       st.data())
def test_round_trip_random(code_bits, gap_bits, ncols, period, data):
    n = data.draw(st.integers(0, 300))
    codes = data.draw(st.lists(st.integers(0, (1 << code_bits) - 1), min_size=n, max_size=n))
    gaps = data.draw(st.lists(st.integers(0, (1 << gap_bits) - 1), min_size=n, max_size=n))
    ranks = data.draw(st.permutations(range(1 << code_bits))) if data.draw(st.booleans()) \
        else None
    round_trip(np.array(codes, dtype=np.int64), np.array(gaps, dtype=np.int64), code_bits,
               gap_bits, ncols, period, ranks)


ADVERSARIAL = {
    "empty": ([], [], 8, 4),
    "one": ([7], [3], 8, 4),
    "all equal, long": ([5] * 60_000, [2] * 60_000, 8, 4),
    "all zero, one bit": ([0] * 60_000, [0] * 60_000, 1, 1),
    "max alphabet, every symbol": (list(range(256)) * 8, list(range(255, -1, -1)) * 8, 8, 8),
    "max alphabet, random": (list(np.random.default_rng(0).integers(0, 256, 20_000)),
                             list(np.random.default_rng(1).integers(0, 256, 20_000)), 8, 8),
    "alternating extremes": ([0, 255] * 5000, [255, 0] * 5000, 8, 8),
    "rare at the ends": ([9] + [1] * 20_000 + [9], [0] * 20_002, 4, 3),
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_round_trip_adversarial(name):
    codes, gaps, cb, gb = ADVERSARIAL[name]
    data = round_trip(np.array(codes, dtype=np.int64), np.array(gaps, dtype=np.int64), cb, gb)
    if name == "empty":
        assert data.size == cm.STATE_BYTES
    if name.startswith("all"):
        assert data.size < 100  # an adapted model codes a certain bit in ~0 bits
    if name == "max alphabet, random":  # incompressible: close to 16 bits an entry
        assert 2 * 20_000 * 0.99 < data.size < 2 * 20_000 * 1.02


def test_value_ranks_order_the_codes_by_value():
    centroids = np.array([0.0, 0.5, -1.0, 0.25, -0.25])
    ranks = cm.value_ranks(centroids, 3)
    assert ranks.tolist() == [2, 4, 0, 3, 1, 5, 6, 7]
    codes, gaps = np.array([1, 2, 4, 0, 7]), np.array([0, 1, 2, 3, 0])
    data = round_trip(codes, gaps, 3, 2, ranks=ranks)
    assert not np.array_equal(data, cm.encode(codes, gaps, 3, 2, 16))  # the symbols differ
    with pytest.raises(ValueError, match="permutation"):
        cm.encode(codes, gaps, 3, 2, 16, ranks=[0] * 8)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 4\)"):
        cm.encode([0, 5], [0, 0], 2, 2, 4)
    with pytest.raises(ValueError, match="same length"):
        cm.encode([0, 1], [0], 2, 2, 4)
    with pytest.raises(ValueError, match="bits must be 1..8"):
        cm.encode([0], [0], 9, 2, 4)


# ---------------------------------------------------------------------------------------------
# Truncated, corrupt and hostile streams


def _good(n=3000):
    codes, gaps = _entries(np.random.default_rng(5), n, 5, 4, 0.3)
    return codes, gaps, cm.encode(codes, gaps, 5, 4, 40, 4)


def test_truncated_and_corrupt_streams_are_refused():
    codes, gaps, data = _good()
    n = codes.size
    decode = lambda d, k=n: cm.decode(d, k, 5, 4, 40, 4, name="s")  # noqa: E731
    cases = {"truncated": (data[:-1], "ends before its symbols"),
             "half": (data[:data.size // 2], "ends before its symbols"),
             "trailing byte": (np.append(data, 0).astype(np.uint8), "does not end"),
             "too short": (data[:3], "ends before"),
             "nothing": (data[:0], "ends before")}
    for name, (bad, match) in cases.items():
        with pytest.raises(ValueError, match=f"^s: .*{match}") as info:
            decode(bad)
        assert "\n" not in str(info.value), name
    with pytest.raises(ValueError, match="ends before|does not end"):
        decode(data, n + 50)  # more entries than coded
    with pytest.raises(ValueError, match="does not end"):
        decode(data, n - 1)
    refused = 0
    for i in range(0, data.size, max(1, data.size // 150)):  # a flipped byte: refused, or other
        bad = data.copy()
        bad[i] ^= 0x5A
        try:
            c, g = decode(bad)
        except ValueError:
            refused += 1
        else:
            assert not (np.array_equal(c, codes) and np.array_equal(g, gaps))
    assert refused > 0


@pytest.mark.parametrize("seed", range(6))
def test_garbage_streams_end_in_an_error(seed):
    # random bytes, a claimed count far beyond them: the decoder runs out of bytes or ends
    # off the final state; never a hang (its work is bounded by the count)
    rng = np.random.default_rng(seed)
    garbage = rng.integers(0, 256, int(rng.integers(4, 64))).astype(np.uint8)
    with pytest.raises(ValueError, match="^g: the stream ends before|^g: decoding does not end"):
        cm.decode(garbage, 100_000, 8, 4, 300, 9, name="g")


# ---------------------------------------------------------------------------------------------
# The cm-coded sparse codebook


@pytest.mark.parametrize("case", CONV_CASES[:6], ids=[c[0] for c in CONV_CASES[:6]])
def test_conv_matches_dense(case, rng):
    x, b, geom = conv_setup(case, rng)
    fmt = CmCodebookWeight.from_dense(weight(rng, geom.weight_shape), 4, 3)
    check_conv_format(fmt, x, b, geom, centroid_sums, f"cm {case[0]}")


@pytest.mark.parametrize("N", [1, 3, 64])
def test_linear_matches_dense_and_sizes(N, rng):
    w = weight(rng, (64, 257), 0.9, skew=0.6)
    fmt = CmCodebookWeight.from_dense(w, 4, 5)
    assert np.array_equal(fmt.to_dense(), w) and FORMATS["cm"] is CmCodebookWeight
    check_linear_format(fmt, rng.standard_normal((N, 257)), rng.standard_normal(64),
                        centroid_sums, f"cm N={N}")
    sc = SparseCodebookWeight.from_dense(w, 4, 5)
    assert fmt.stored_bytes() < sc.stored_bytes()
    back = CmCodebookWeight.from_arrays(w.shape, fmt.arrays(), fmt.options(), dtype=np.float64)
    assert np.array_equal(back.to_dense(), w)
    assert fmt.astype(np.float32).to_dense().dtype == np.float32
    assert np.array_equal(fmt.decoded().to_dense(), w)


def test_ranks_survive_a_change_of_dtype(rng):
    # centroids that differ in float64 but tie in float32: the ranks come from float32 values
    w = np.zeros((4, 6))
    w.flat[[1, 5, 9, 14]] = [0.1, 0.1 + 1e-12, -0.3, 0.7]
    fmt = CmCodebookWeight.from_dense(w, 3, 3,
                                      centroids=np.array([0.0, 0.1, 0.1 + 1e-12, -0.3, 0.7]))
    assert np.array_equal(fmt.to_dense(), w)
    for dtype in (np.float32, np.float64):
        back = CmCodebookWeight.from_arrays(w.shape, fmt.astype(dtype).arrays(), fmt.options(),
                                            dtype=np.float64)
        assert np.allclose(back.to_dense(), w)


def _lenet(rng):
    from robustcnn.engine import Conv2d, Linear, Net, ReLU

    return Net([Conv2d("conv1", 6, kernel=3), ReLU("r"), Linear("ip1", 12), ReLU("r2"),
                Linear("ip2", 5)], input_shape=(2, 7, 7), seed=0)


def test_loads_bit_for_bit_as_the_huffman_net(tmp_path, rng):
    from robustcnn.compress.modelfile import load_model, save_model

    nets = {}
    for kind, cls in (("huffman", HuffmanCodebookWeight), ("cm", CmCodebookWeight)):
        net = _lenet(rng)
        for name, bits in (("conv1", (5, 3)), ("ip1", (4, 5)), ("ip2", (6, 5))):
            layer = net[name]
            w = weight(np.random.default_rng(len(name)), layer.weight_shape).astype(np.float32)
            sc = SparseCodebookWeight.from_dense(w, *bits, at=layer.at)
            layer.set_weight_format(cls.from_sparse_codebook(sc, at=layer.at))
        save_model(tmp_path / f"{kind}.rcnn", net)
        nets[kind], _ = load_model(tmp_path / f"{kind}.rcnn")
    x = rng.random((4, 2, 7, 7)).astype(np.float32)
    streamed = nets["huffman"].logits(x)  # Huffman's own kernels decode as they run
    for name in ("conv1", "ip1", "ip2"):
        assert nets["cm"][name].weight_format.kind == "cm"
        assert np.array_equal(nets["cm"][name].dense_weight(), nets["huffman"][name].dense_weight())
        fmt = nets["huffman"][name].weight_format
        nets["huffman"][name].set_weight_format(fmt.decoded())  # its decode-once cache
    # the same sparse codebook, so the same kernels: the same logits to the bit
    assert np.array_equal(nets["cm"].logits(x), nets["huffman"].logits(x))
    np.testing.assert_allclose(nets["cm"].logits(x), streamed, rtol=1e-5, atol=1e-5)


def _arrays(rng):
    return CmCodebookWeight.from_dense(weight(rng, (6, 3, 3, 3)), 4, 3).arrays()


BAD = [
    (lambda a: {**a, "count": np.array([163])}, "163 entries for a weight of 162 values"),
    (lambda a: {**a, "count": np.array([a["count"][0] + 1])}, "ends before|does not end"),
    (lambda a: {**a, "count": np.array([-1])}, "one non-negative entry count"),
    (lambda a: {**a, "count": np.array([1, 2])}, "one non-negative entry count"),
    (lambda a: {**a, "stream": a["stream"][:-1]}, "ends before"),
    (lambda a: {**a, "stream": a["stream"][:2]}, "ends before"),
    (lambda a: {**a, "stream": np.append(a["stream"], 7)}, "does not end"),
    (lambda a: {**a, "stream": a["stream"].astype(np.float32)}, "expected integers"),
    (lambda a: {**a, "stream": a["stream"].astype(np.int64) + 256}, "outside 0..255"),
    (lambda a: {**a, "centroids": np.zeros(17, np.float32)}, "17 centroids do not fit 4-bit"),
]


@pytest.mark.parametrize("tamper, match", BAD, ids=[b[1][:24] for b in BAD])
def test_malformed_structures_are_refused(tamper, match, rng):
    with pytest.raises((ValueError, TypeError), match=match) as info:
        CmCodebookWeight.from_arrays((6, 3, 3, 3), tamper(_arrays(rng)),
                                     {"code_bits": 4, "gap_bits": 3, "model": cm.MODEL_VERSION},
                                     at=LAYER)
    assert str(info.value).startswith(LAYER) and "\n" not in str(info.value)


@pytest.mark.parametrize("version", [None, 0, cm.MODEL_VERSION + 1, "1"])
def test_a_stream_of_another_context_model_is_refused(version, rng):
    options = {"code_bits": 4, "gap_bits": 3}
    if version is not None:
        options["model"] = version
    with pytest.raises(ValueError, match="^" + re.escape(
            f"{LAYER}: a cm stream of context model version {version!r}; this robustcnn "
            f"decodes version {cm.MODEL_VERSION}")):
        CmCodebookWeight.from_arrays((6, 3, 3, 3), _arrays(rng), options, at=LAYER)
