"""engine/formats/rans.py and rans_codebook.py: the rANS coder against a plain-Python encoder and
decoder written from the equations (big integers, no shared code), round trips on random
(hypothesis) and adversarial streams, the frequency normalisation, malformed streams and tables
refused with one-line errors, and the rANS-coded sparse codebook against the dense kernels on
its decoded weight and through a model file."""

import numpy as np
import pytest
from format_checks import (CONV_CASES, check_conv_format, check_linear_format, conv_setup,
                           sparse_centroid_sums as centroid_sums,
                           skewed_codebook_weight as weight)
from hypothesis import given, settings
from hypothesis import strategies as st

from robustcnn.engine.formats import (FORMATS, HuffmanCodebookWeight, RansCodebookWeight,
                                      SparseCodebookWeight, rans)

LAYER = "conv2 (Convolution)"
FAST = settings(max_examples=60, deadline=None, derandomize=True)


# ---------------------------------------------------------------------------------------------
# The coder written out from the equations, in plain Python


def py_encode(symbols, freqs):
    """x from L = 2^23; per symbol, last first: renormalise (emit low bytes while
    x ≥ 256·(L/M)·f), then x ← ⌊x/f⌋·M + x mod f + c. → state (4 bytes LE) + bytes reversed."""
    M, L = 1 << 12, 1 << 23
    cum = [sum(freqs[:s]) for s in range(len(freqs))]
    x, emitted = L, []
    for s in reversed(list(symbols)):
        f = int(freqs[s])
        while x >= (L // M) * 256 * f:
            emitted.append(x & 255)
            x >>= 8
        x = (x // f) * M + x % f + cum[s]
    return bytes(x.to_bytes(4, "little")) + bytes(reversed(emitted))


def py_decode(data, freqs, n):
    M, L = 1 << 12, 1 << 23
    cum = [sum(freqs[:s]) for s in range(len(freqs))]
    x, pos, out = int.from_bytes(data[:4], "little"), 4, []
    for _ in range(n):
        slot = x % M
        s = next(t for t in range(len(freqs)) if cum[t] <= slot < cum[t] + freqs[t])
        out.append(s)
        x = int(freqs[s]) * (x // M) + slot - cum[s]
        while x < L:
            x = x * 256 + data[pos]
            pos += 1
    assert x == L and pos == len(data)
    return out


def round_trip(symbols, alphabet):
    symbols = np.asarray(symbols, dtype=np.int64)
    data, freqs = rans.encode(symbols, alphabet)
    assert freqs.dtype == np.uint16 and data.dtype == np.uint8
    if symbols.size:
        assert int(freqs.astype(np.int64).sum()) == rans.M and freqs[-1] > 0
        assert (freqs[np.unique(symbols)] > 0).all()
    out = rans.decode(data, rans.check_freqs(freqs, alphabet, symbols.size, "t"), symbols.size)
    assert np.array_equal(out, symbols)
    return data, freqs


@FAST
@given(st.lists(st.integers(0, 255), max_size=400), st.integers(0, 3))
def test_round_trip_random(symbols, skew):
    symbols = [s >> (2 * skew) for s in symbols]  # smaller alphabets, heavier symbols
    data, freqs = round_trip(symbols, 256)
    assert data.tobytes() == py_encode(symbols, freqs.tolist())
    assert py_decode(data.tobytes(), freqs.tolist(), len(symbols)) == symbols


@FAST
@given(st.lists(st.integers(0, 31), min_size=1, max_size=300),
       st.lists(st.integers(0, 31), min_size=1, max_size=300))
def test_pair_decode_and_any_table(a, b):
    n = min(len(a), len(b))
    a, b = np.array(a[:n]), np.array(b[:n])
    sa, fa = rans.encode(a, 32)
    # a table other than the symbols' own (every symbol present) codes them too
    fb = rans.normalize(np.bincount(b, minlength=32) + 1)
    sb, fb = rans.encode(b, 32, freqs=fb)
    assert sb.tobytes() == py_encode(b.tolist(), fb.tolist())
    out_a, out_b = rans.decode_pair((sa, fa), (sb, fb), n)
    assert np.array_equal(out_a, a) and np.array_equal(out_b, b)


ADVERSARIAL = {
    "empty": [],
    "one": [7],
    "lone symbol, long": [3] * 50_000,  # f = M: no bytes but the state
    "every symbol once": list(range(256)),
    "every symbol, shuffled x40": list(np.random.default_rng(0).permutation(np.repeat(np.arange(256), 40))),
    "huge skew": [0] * 100_000 + [255, 1, 254],  # rare symbols at the floor f = 1
    "alternating": [0, 255] * 5000,
    "rare at the ends": [9] + [1] * 20_000 + [9],
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_round_trip_adversarial(name):
    symbols = ADVERSARIAL[name]
    data, freqs = round_trip(symbols, 256)
    if name == "lone symbol, long":
        assert data.size == 4 and freqs.tolist() == [0, 0, 0, 4096]
    if len(symbols) <= 3000:
        assert data.tobytes() == py_encode(symbols, freqs.tolist())


def test_normalize_is_close_to_the_entropy():
    rng = np.random.default_rng(3)
    for p in (0.97 ** np.arange(256), np.array([0.999, 0.001]), rng.random(40)):
        counts = np.round(p / p.sum() * 100_000).astype(np.int64)
        f = rans.normalize(counts)
        assert f.sum() == rans.M and ((f > 0) == (counts > 0)).all()
        q = counts / counts.sum()
        entropy = -(q[q > 0] * np.log2(q[q > 0])).sum()
        cost = -(q[q > 0] * np.log2(f[counts > 0] / rans.M)).sum()
        assert entropy <= cost <= entropy + 0.01 + 0.002 * np.count_nonzero(counts)
        symbols = rng.choice(counts.size, size=20_000, p=q)
        data, _ = rans.encode(symbols, 256)
        emp = np.bincount(symbols, minlength=counts.size) / symbols.size
        bound = -(emp[emp > 0] * np.log2(emp[emp > 0])).sum()
        assert 8 * data.size / symbols.size <= bound + 0.05 + 64 / symbols.size


# ---------------------------------------------------------------------------------------------
# Malformed streams and tables


def _good(n=2000):
    symbols = np.random.default_rng(5).geometric(0.3, n).clip(max=31) - 1
    data, freqs = rans.encode(symbols, 32)
    return symbols, data, freqs


def test_corrupt_streams_are_refused():
    symbols, data, freqs = _good()
    n = symbols.size
    cases = {"truncated": (data[:-1], "ends before its symbols"),
             "trailing byte": (np.append(data, 0), "does not end at the encoder's start"),
             "too short": (data[:3], "ends before"),
             "state too small": (np.concatenate([[0, 0, 0, 0]], axis=None).astype(np.uint8),
                                 "initial state"),
             "state too large": (np.append([0, 0, 0, 0x80], data[4:]).astype(np.uint8),
                                 "initial state")}
    for name, (bad, match) in cases.items():
        with pytest.raises(ValueError, match=f"^s: .*{match}"):
            rans.decode(bad, freqs, n, name="s")
    with pytest.raises(ValueError, match="ends before|does not end"):
        rans.decode(data, freqs, n + 50, name="s")  # more symbols than coded
    with pytest.raises(ValueError, match="does not end"):
        rans.decode(data, freqs, n - 1, name="s")
    flips = 0
    for i in range(4, min(data.size, 200)):  # a flipped byte: refused, or other symbols
        bad = data.copy()
        bad[i] ^= 0x5A
        try:
            out = rans.decode(bad, freqs, n, name="s")
        except ValueError:
            flips += 1
        else:
            assert not np.array_equal(out, symbols)
    assert flips > 0


def test_bad_tables_are_refused():
    _, _, freqs = _good()
    for bad, match in [(np.append(freqs, 0).astype(np.uint16), "unused tail"),
                       (np.append(freqs, 1).astype(np.uint16), "sum to 4097"),
                       (np.zeros(40, np.uint16), "40 frequencies for an alphabet of 32"),
                       (np.array([4097], np.uint16), "exceeds 4096")]:
        with pytest.raises(ValueError, match=f"^t: .*{match}"):
            rans.check_freqs(bad, 32, 10, "t")
    with pytest.raises(ValueError, match="no frequency"):
        rans.encode([0, 5], 32, freqs=np.array([4096], np.uint16))
    with pytest.raises(ValueError, match=r"symbols must lie in \[0, 4\)"):
        rans.encode([0, 5], 4)


# ---------------------------------------------------------------------------------------------
# The rANS-coded sparse codebook


@pytest.mark.parametrize("case", CONV_CASES[:6], ids=[c[0] for c in CONV_CASES[:6]])
def test_conv_matches_dense(case, rng):
    x, b, geom = conv_setup(case, rng)
    fmt = RansCodebookWeight.from_dense(weight(rng, geom.weight_shape), 4, 3)
    check_conv_format(fmt, x, b, geom, centroid_sums, f"rans {case[0]}")


@pytest.mark.parametrize("N", [1, 3, 64])
def test_linear_matches_dense_and_sizes(N, rng):
    w = weight(rng, (64, 257), 0.9, skew=0.6)  # skewed codes: entropy coding pays
    fmt = RansCodebookWeight.from_dense(w, 4, 5)
    assert np.array_equal(fmt.to_dense(), w) and FORMATS["rans"] is RansCodebookWeight
    check_linear_format(fmt, rng.standard_normal((N, 257)), rng.standard_normal(64),
                        centroid_sums, f"rans N={N}")
    sc = SparseCodebookWeight.from_dense(w, 4, 5)
    assert fmt.stored_bytes() < sc.stored_bytes()
    hf = HuffmanCodebookWeight.from_sparse_codebook(sc)
    assert fmt.stored_bytes() <= 1.05 * hf.stored_bytes()
    back = RansCodebookWeight.from_arrays(w.shape, fmt.arrays(), fmt.options(), dtype=np.float64)
    assert np.array_equal(back.to_dense(), w)
    assert fmt.astype(np.float32).to_dense().dtype == np.float32


def test_model_file_round_trip_and_tampering(tmp_path, rng):
    from robustcnn.compress.modelfile import load_model, save_model
    from robustcnn.engine import Conv2d, Linear, Net, ReLU

    net = Net([Conv2d("conv1", 4, kernel=3), ReLU("r"), Linear("ip1", 5)], input_shape=(1, 6, 6),
              seed=0)
    for name in ("conv1", "ip1"):
        layer = net[name]
        layer.set_weight_format(RansCodebookWeight.from_dense(
            weight(rng, layer.weight_shape).astype(np.float32), 4, 3, at=layer.at))
    path = tmp_path / "r.rcnn"
    save_model(path, net)
    loaded, _ = load_model(path)
    x = rng.random((3, 1, 6, 6)).astype(np.float32)
    assert loaded["ip1"].weight_format.kind == "rans"
    assert np.array_equal(loaded.logits(x), net.logits(x))


def _arrays(rng):
    return RansCodebookWeight.from_dense(weight(rng, (6, 3, 3, 3)), 4, 3).arrays()


BAD = [
    (lambda a: {**a, "count": np.array([163])}, "163 entries for a weight of 162 values"),
    (lambda a: {**a, "count": np.array([a["count"][0] + 1])}, "ends before|does not end"),
    (lambda a: {**a, "count": np.array([-1])}, "one non-negative entry count"),
    (lambda a: {**a, "code_stream": a["code_stream"][:-1]}, "ends before"),
    (lambda a: {**a, "gap_stream": np.append(a["gap_stream"], 7)}, "does not end"),
    (lambda a: {**a, "code_freqs": np.append(a["code_freqs"], 1)}, "sum to 4097"),
    (lambda a: {**a, "gap_freqs": np.full(9, 455)}, "9 frequencies for an alphabet of 8"),
    (lambda a: {**a, "gap_freqs": -a["gap_freqs"].astype(np.int64)}, "must lie in 0..4096"),
    (lambda a: {**a, "code_freqs": a["code_freqs"].astype(np.float32)}, "expected integers"),
]


@pytest.mark.parametrize("tamper, match", BAD, ids=[b[1][:24] for b in BAD])
def test_malformed_structures_are_refused(tamper, match, rng):
    with pytest.raises((ValueError, TypeError), match=match) as info:
        RansCodebookWeight.from_arrays((6, 3, 3, 3), tamper(_arrays(rng)),
                                       {"code_bits": 4, "gap_bits": 3}, at=LAYER)
    assert str(info.value).startswith(LAYER) and "\n" not in str(info.value)
