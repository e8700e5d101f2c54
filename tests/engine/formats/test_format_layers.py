"""engine/layers.py and engine/net.py with compressed weights: ``Net.convert`` on LeNet-5, state
dicts, specs, copies and HDF5 checkpoints of mixed formats, input and weight gradients through
compressed layers, SGD on them (structure kept, decay on weights only), Deep Compression's
per-centroid gradient on a hand-made example, and the layer-level error messages.

LeNet-5 is prepared so that every format stores it exactly (``prepared_lenet``): weights on 15
levels with 70 % of them pruned. A converted net then differs from its dense twin only in the
order of its sums.
"""

import json
import re

import numpy as np
import pytest
from helpers import F32, F64, assert_close, check_gradients

from robustcnn.engine import Conv2d, Linear, MaxPool2d, Net, softmax_cross_entropy
from robustcnn.engine.checkpoint import load_net, save_checkpoint
from robustcnn.engine.formats import (FORMATS, CodebookWeight, CSRWeight, DenseWeight,
                                      SparseCodebookWeight)
from robustcnn.engine.train import SGD
from robustcnn.models.lenet import lenet5

WEIGHTED = ("conv1", "conv2", "ip1", "ip2")
KINDS = ("dense", "csr", "codebook", "sparse_codebook")
OPTIONS = {"dense": {}, "csr": {}, "codebook": dict(bits=4),
           "sparse_codebook": dict(code_bits=4, gap_bits=4)}
STATE_KEYS = {"dense": {"weight"}, "csr": {"data", "indices", "indptr"},
              "codebook": {"codes", "centroids"},
              "sparse_codebook": {"codes", "gaps", "count", "centroids"}}
TIGHT = 1e-12  # float64, sums in another order

# ---------------------------------------------------------------------------------------------
# A LeNet-5 every format stores exactly


def quantize(w, prune):
    """``w`` on 15 levels s·k/7 (k = −7 … 7, s = max |w|), then the smallest ``prune`` fraction
    of magnitudes set to 0: 4-bit codes (with or without a reserved 0.0) hold it exactly."""
    s = np.abs(w).max()
    q = s * np.round(w / s * 7) / 7
    q[np.abs(q) <= np.quantile(np.abs(q), prune)] = 0.0
    return q


def prepared_lenet(*, seed=0, prune=0.7):
    net = lenet5(dtype=np.float64, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for name in WEIGHTED:
        layer = net.layer(name)
        layer.set_weight_format(DenseWeight(quantize(layer.dense_weight(), prune)))
        layer.params["bias"][...] = rng.normal(0.0, 0.1, layer.params["bias"].shape)
    return net


def convert_all(net, mix):
    for name, kind in mix.items():
        net.convert(name, kind, **OPTIONS[kind])
    return net


def images(n, seed=3):
    return np.random.default_rng(seed).random((n, 1, 28, 28))


LABELS = np.array([1, 7, 3, 0])
MIX = dict(conv1="codebook", conv2="csr", ip1="sparse_codebook", ip2="codebook")


# ---------------------------------------------------------------------------------------------
# Net.convert


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", WEIGHTED)
def test_convert_keeps_outputs(name, kind):
    net = prepared_lenet()
    x = images(3)
    before = net.forward(x)
    layer = net.layer(name)
    w = layer.dense_weight()
    fmt = net.convert(name, kind, **OPTIONS[kind])
    assert fmt is layer.weight_format and fmt.kind == kind and fmt.dtype == F64
    assert fmt.shape == w.shape
    # Storage round trip: the stored weight is exactly the dense one.
    assert np.array_equal(layer.dense_weight(), w)
    assert_close(net.forward(x), before, TIGHT, f"{name} as {kind}")
    # The format's trainable arrays are the layer's parameters, the others its buffers.
    assert set(layer.params) == set(fmt.trainable) | {"bias"}
    assert set(layer.buffers) == set(fmt.array_names) - set(fmt.trainable)
    for k, a in fmt.arrays().items():
        assert {**layer.params, **layer.buffers}[k] is a, f"{name}/{k} is not the format's array"
    stored = sum(a.size for a in layer.params.values())
    assert stored == fmt.arrays()[fmt.trainable[0]].size + layer.params["bias"].size
    # And back to dense.
    net.convert(name, "dense")
    assert np.array_equal(layer.dense_weight(), w)
    assert_close(net.forward(x), before, TIGHT, f"{name} back to dense")


def test_conversion_chain_is_exact():
    net = prepared_lenet()
    w = net.layer("conv2").dense_weight()
    for kind in ("csr", "codebook", "sparse_codebook", "csr", "codebook", "dense"):
        net.convert("conv2", kind, **OPTIONS[kind])
        assert np.array_equal(net.layer("conv2").dense_weight(), w), kind  # storage round trip


def test_num_params_counts_stored_values():
    net = prepared_lenet()
    conv2 = net.layer("conv2")
    nnz = int(np.count_nonzero(conv2.dense_weight()))
    dense_count = net.num_params()
    net.convert("conv2", "csr")
    assert net.num_params() == dense_count - conv2.weight_format.size + nnz
    fmt = net.convert("conv2", "codebook", bits=4)
    assert net.num_params() == dense_count - fmt.size + fmt.centroids.size


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_keys(kind):
    net = prepared_lenet()
    fmt = net.convert("conv2", kind, **OPTIONS[kind])
    state = net.state_dict()
    assert {k.split("/")[1] for k in state if k.startswith("conv2/")} == STATE_KEYS[kind] | {"bias"}
    for k in STATE_KEYS[kind]:
        assert state[f"conv2/{k}"] is fmt.arrays()[k]  # the arrays themselves
    for other in ("conv1", "ip1", "ip2"):
        assert {k for k in state if k.startswith(f"{other}/")} == \
               {f"{other}/weight", f"{other}/bias"}
    layer_spec = net.spec()["layers"][2]
    assert layer_spec["name"] == "conv2"
    if kind == "dense":
        assert "weight_format" not in layer_spec
    else:
        assert layer_spec["weight_format"] == {"kind": kind, **fmt.options()}


def test_declared_formats_are_built(rng):
    # A net may be declared with compressed layers: they are initialised in their format.
    net = Net([Conv2d("c1", 4, 3, padding=1, weight_format={"kind": "csr"}),
               Conv2d("c2", 6, 3, weight_format={"kind": "codebook", "bits": 3}),
               MaxPool2d("p", 2),
               Linear("fc", 5, weight_format={"kind": "sparse_codebook", "code_bits": 5,
                                              "gap_bits": 2})], (2, 8, 8), dtype=np.float64)
    assert [net.layer(n).weight_format.kind for n in ("c1", "c2", "fc")] == \
           ["csr", "codebook", "sparse_codebook"]
    assert net.layer("c2").weight_format.bits == 3
    assert net.layer("fc").weight_format.code_bits == 5
    x = rng.random((2, 2, 8, 8))
    y = net.forward(x)
    assert y.shape == (2, 5) and np.isfinite(y).all()


# ---------------------------------------------------------------------------------------------
# Specs, copies, checkpoints


@pytest.mark.parametrize("kind", KINDS)
def test_spec_round_trip(kind):
    net = convert_all(prepared_lenet(), dict(conv2=kind, ip1=kind))
    x = images(3)
    spec = json.loads(json.dumps(net.spec()))  # as a file would hold it
    other = Net.from_spec(spec)
    assert other.dtype == F64
    other.load_state_dict(net.state_dict())
    for name in ("conv2", "ip1"):
        assert other.layer(name).weight_format.kind == kind
        assert other.layer(name).weight_format.options() == net.layer(name).weight_format.options()
    # Exact: the same arrays through the same kernels with the same thread split.
    assert np.array_equal(other.forward(x), net.forward(x))


@pytest.mark.parametrize("kind", KINDS)
def test_copy_with_formats(kind):
    net = convert_all(prepared_lenet(), dict(conv1=kind, ip2=kind))
    x = images(3)
    y = net.forward(x)
    same = net.copy()
    assert np.array_equal(same.forward(x), y)  # exact: same arrays, same kernels
    f32 = net.copy(dtype=np.float32)
    assert f32.dtype == F32
    for name in ("conv1", "ip2"):
        fmt, fmt32 = net.layer(name).weight_format, f32.layer(name).weight_format
        assert fmt32.kind == kind and fmt32.dtype == F32
        for k, a in fmt.arrays().items():
            a32 = fmt32.arrays()[k]
            if k in fmt.trainable:
                assert a32.dtype == F32
                assert_close(a32, a, 1e-7, f"{name}/{k} as float32")
            else:
                assert np.array_equal(a32, a) and a32.dtype == a.dtype, f"{name}/{k} changed"
    assert_close(f32.forward(x), y, 1e-5, f"{kind} net in float32")


CHECKPOINT_MIXES = [
    dict(conv1="codebook", conv2="csr", ip1="dense", ip2="codebook"),
    dict(conv1="csr", conv2="codebook", ip1="csr", ip2="dense"),
    dict(conv1="dense", conv2="sparse_codebook", ip1="csr", ip2="codebook"),
    MIX,
]


@pytest.mark.parametrize("mix", CHECKPOINT_MIXES,
                         ids=lambda m: "-".join(m[n] for n in WEIGHTED))
def test_checkpoint_round_trip(mix, tmp_path):
    net = convert_all(prepared_lenet(), mix)
    x = images(3)
    path = tmp_path / "mixed.h5"
    save_checkpoint(path, net, meta={"note": "mixed formats"})
    loaded, meta = load_net(path)
    assert meta == {"note": "mixed formats"}
    state, loaded_state = net.state_dict(), loaded.state_dict()
    assert set(loaded_state) == set(state)
    for k, a in state.items():
        b = loaded_state[k]
        assert b.dtype == a.dtype and np.array_equal(b, a), f"{k} changed in the file"
    for name, kind in mix.items():
        assert loaded.layer(name).weight_format.kind == kind
    # Bit-identical: the same arrays through the same kernels with the same thread split.
    assert np.array_equal(loaded.forward(x), net.forward(x))
    as32, _ = load_net(path, dtype=np.float32)
    assert_close(as32.forward(x), net.forward(x), 1e-5, "checkpoint loaded as float32")


def _tamper_set(index, value):
    def tamper(a):
        a[index] = value
        return a
    return tamper


# (id, layer, kind, array, tamper, message after "layer (type): ")
TAMPERED = [
    ("csr_index_out_of_range", "conv2", "csr", "indices", _tamper_set(0, 500),
     "a column index lies outside \\[0, 500\\)"),
    ("csr_indptr_decreases", "ip1", "csr", "indptr", _tamper_set(3, 0),
     "indptr must start at 0 and never decrease"),
    ("csr_indptr_short", "ip2", "csr", "indptr", lambda a: a[:-1],
     "indptr has 10 entries, expected rows \\+ 1 = 11"),
    ("codebook_codes_short", "conv1", "codebook", "codes", lambda a: a[:-1],
     "packed codes must be 250 uint8 bytes"),
    ("codebook_code_past_centroids", "conv2", "codebook", "centroids", lambda a: a[:2],
     "a code is >= the codebook size 2"),
    ("sparse_codebook_past_the_end", "ip2", "sparse_codebook", "gaps",
     lambda a: np.full_like(a, 0xFF), "the entries run to position"),
    ("sparse_codebook_centroid0", "ip1", "sparse_codebook", "centroids", _tamper_set(0, 0.5),
     r"centroid 0 is \S*0\.5"),
    ("dense_nan", "conv1", "dense", "weight", _tamper_set((0, 0, 0, 0), np.nan),
     "weight has non-finite values"),
]


@pytest.mark.parametrize("name,kind,key,tamper,match", [t[1:] for t in TAMPERED],
                         ids=[t[0] for t in TAMPERED])
def test_tampered_state_is_rejected(name, kind, key, tamper, match):
    net = prepared_lenet()
    net.convert(name, kind, **OPTIONS[kind])
    x = images(2)
    before = net.forward(x)
    state = {k: v.copy() for k, v in net.state_dict().items()}
    state[f"{name}/{key}"] = tamper(state[f"{name}/{key}"])
    layer_type = "Convolution" if name.startswith("conv") else "InnerProduct"
    with pytest.raises(ValueError, match=rf"^tampered\.h5: {name} \({layer_type}\): {match}"):
        net.load_state_dict(state, source="tampered.h5")
    # The rejected layer keeps its weights (exact: nothing was written).
    assert net.layer(name).weight_format.kind == kind
    assert np.array_equal(net.forward(x), before)


def test_wide_indices_load_as_given():
    # A state with int64 CSR indices (a file written where they did not fit int32) loads
    # without narrowing, and computes the same outputs.
    net = convert_all(prepared_lenet(), dict(conv2="csr", ip1="csr"))
    x = images(2)
    before = net.forward(x)
    state = {k: v.astype(np.int64) if v.dtype.kind in "iu" else v.copy()
             for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    for name in ("conv2", "ip1"):
        fmt = net.layer(name).weight_format
        assert fmt.indices.dtype == np.int64 and fmt.indptr.dtype == np.int64
    assert_close(net.forward(x), before, TIGHT, "int64 indices")


def test_state_of_another_format_is_rejected():
    net = prepared_lenet()
    csr_state = convert_all(prepared_lenet(), dict(conv2="csr")).state_dict()
    with pytest.raises(ValueError, match=r"^other\.h5: does not match lenet5: missing "
                                         r"\['conv2/weight'\], unexpected \['conv2/data', "
                                         r"'conv2/indices', 'conv2/indptr'\]"):
        net.load_state_dict(csr_state, source="other.h5")


# ---------------------------------------------------------------------------------------------
# Gradients through compressed layers


def test_input_gradient_matches_the_dense_net():
    dense = prepared_lenet()
    net = convert_all(prepared_lenet(), MIX)
    x = images(4)
    loss, dx = net.loss_and_input_grad(x, LABELS)
    loss_d, dx_d = dense.loss_and_input_grad(x, LABELS)
    assert dx.dtype == F64 and dx.shape == x.shape
    assert_close(loss, loss_d, TIGHT, "loss, compressed vs dense")
    assert_close(dx, dx_d, TIGHT, "dL/dx, compressed vs dense")

    # Finite differences of Σ_n loss[n] (dx[n] is d loss[n] / d x[n]; examples are independent).
    def losses(x):
        return softmax_cross_entropy(net.forward(x), LABELS)[0]

    check_gradients(losses, [x], np.ones(len(x)), (dx,), samples=8, rtol=1e-6,
                    what="LeNet-5 with compressed layers")


def test_weight_gradients_match_the_dense_net():
    # net.grads of a compressed layer = its format's reduction of the dense net's dL/dW
    # (reduce_dense_grad is checked against an independent reference in test_formats.py).
    dense = prepared_lenet()
    net = convert_all(prepared_lenet(), MIX)
    x = images(4)
    loss = net.loss_and_grad(x, LABELS)[0]
    assert loss == pytest.approx(dense.loss_and_grad(x, LABELS)[0], rel=TIGHT)
    for name in WEIGHTED:
        fmt = net.layer(name).weight_format
        grads, dense_grads = net.grads[name], dense.grads[name]
        want = fmt.reduce_dense_grad(dense_grads["weight"])
        assert set(grads) == set(fmt.trainable) | {"bias"}
        for k in fmt.trainable:
            assert_close(grads[k], want[k], TIGHT, f"{name} d{k}")
        assert_close(grads["bias"], dense_grads["bias"], TIGHT, f"{name} dbias")


def two_by_three(kind):
    """A 2×3 weight with known codes, as a Linear (3 → 2) and as a Conv2d with a 1×3 kernel."""
    if kind == "codebook":  # codes [[0 1 2] [2 1 0]] into centroids [−1, 0.5, 2]
        centroids = np.array([-1.0, 0.5, 2.0])
        w = centroids[[[0, 1, 2], [2, 1, 0]]]
        return CodebookWeight.from_dense(w, bits=2, centroids=centroids)
    w = np.array([[0.0, 0.5, 2.0], [2.0, 0.5, 0.0]])
    if kind == "sparse_codebook":  # codes of the non-zeros: 1 2 2 1 into [0, 0.5, 2]
        return SparseCodebookWeight.from_dense(w, code_bits=2, gap_bits=1,
                                               centroids=np.array([0.0, 0.5, 2.0]))
    return CSRWeight.from_dense(w)


# x = [[1 2 3] [0 1 −1]], dy = [[1 −2] [3 1]]:  dW = dyᵀ·x = [[1 5 0] [−2 −3 −7]]
X = np.array([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]])
DY = np.array([[1.0, -2.0], [3.0, 1.0]])
HAND = {
    # centroid 0: W[0,0], W[1,2] → 1 − 7;  1: W[0,1], W[1,1] → 5 − 3;  2: W[0,2], W[1,0] → 0 − 2
    "codebook": ("centroids", [-6.0, 2.0, -2.0]),
    # code 0 (the zeros and fillers) is never trained; 1: W[0,1], W[1,1]; 2: W[0,2], W[1,0]
    "sparse_codebook": ("centroids", [0.0, 2.0, -2.0]),
    # the stored weights W[0,1], W[0,2], W[1,0], W[1,1]
    "csr": ("data", [5.0, 0.0, -2.0, -3.0]),
}


@pytest.mark.parametrize("layer", ["linear", "conv"])
@pytest.mark.parametrize("kind", ["codebook", "sparse_codebook", "csr"])
def test_stored_value_gradient_by_hand(kind, layer):
    # Deep Compression eq. 3: dL/dC_k = Σ_{i,j : code(i,j) = k} dL/dW_ij.
    fmt = two_by_three(kind)
    if kind == "codebook":
        assert fmt.code_array().tolist() == [0, 1, 2, 2, 1, 0]
    if kind == "sparse_codebook":
        assert fmt.entries()[0].tolist() == [1, 2, 2, 1] and fmt.fillers() == 0
    if layer == "linear":
        net = Net([Linear("w", 2, bias=False)], (3,), dtype=np.float64)
        x, dy = X, DY
    else:
        net = Net([Conv2d("w", 2, kernel=(1, 3), bias=False)], (1, 1, 3), dtype=np.float64)
        x, dy = X.reshape(2, 1, 1, 3), DY.reshape(2, 2, 1, 1)
        fmt = type(fmt).from_arrays((2, 1, 1, 3), fmt.arrays(), fmt.options(), dtype=np.float64)
    net.layer("w").set_weight_format(fmt)
    net.forward_for_backward(x)
    net.backward(dy)
    key, want = HAND[kind]
    assert list(net.grads["w"]) == [key]
    assert_close(net.grads["w"][key], np.array(want), 1e-15, f"{kind} by hand")


# ---------------------------------------------------------------------------------------------
# Training


def test_training_keeps_the_structure():
    net = convert_all(prepared_lenet(), dict(conv2="csr", ip1="codebook", ip2="sparse_codebook"))
    conv2, ip1, ip2 = net.layer("conv2"), net.layer("ip1"), net.layer("ip2")
    pruned = conv2.dense_weight() == 0
    structure = {k: v.copy() for k, v in net.state_dict().items() if v.dtype.kind in "iu"}
    values = {k: v.copy() for k, v in net.state_dict().items() if v.dtype.kind == "f"}
    x = images(8, seed=5)
    labels = np.arange(8) % 10
    opt = SGD(momentum=0.9, weight_decay=5e-3)
    for _ in range(3):
        net.loss_and_grad(x, labels)
        opt.step(net, 0.05)
    # Exact: pruned weights are not stored, so they are 0.0 and nothing else.
    assert (conv2.dense_weight()[pruned] == 0).all()
    assert np.count_nonzero(conv2.dense_weight()) == np.count_nonzero(~pruned)
    assert ip1.weight_format.centroids.size <= 16
    assert np.unique(ip1.dense_weight()).size <= ip1.weight_format.centroids.size
    assert ip2.weight_format.centroids[0] == 0.0  # exact: code 0 is never trained
    for k, v in structure.items():  # indices, indptr, codes, gaps: untouched
        assert np.array_equal(net.state_dict()[k], v), f"{k} changed in training"
    for k in ("conv2/data", "ip1/centroids", "ip2/centroids", "conv1/weight", "ip2/bias"):
        assert not np.array_equal(net.state_dict()[k], values[k]), f"{k} was not trained"
    assert not np.array_equal(ip2.weight_format.centroids[1:], values["ip2/centroids"][1:])


@pytest.mark.parametrize("grads", ["zero", "real"])
def test_sgd_step_by_hand(grads):
    # One step with momentum 0: w ← w − lr·(g + λ·w), λ only for weights (dense weight, CSR
    # data), never for biases or centroids.
    net = convert_all(prepared_lenet(), MIX)
    net.convert("conv1", "dense")  # one layer of each: dense, CSR, codebook, sparse codebook
    net.convert("ip2", "codebook", bits=4)
    lr, lam = 0.1, 0.01
    if grads == "zero":
        for name in WEIGHTED:
            layer = net.layer(name)
            layer.grads = {k: np.zeros_like(v) for k, v in layer.params.items()}
    else:
        net.loss_and_grad(images(4), LABELS)
    g = {f"{n}/{k}": v.copy() for n, gs in net.grads.items() for k, v in gs.items()}
    before = {k: v.copy() for k, v in net.state_dict().items()}
    SGD(momentum=0.0, weight_decay=lam).step(net, lr)
    decayed = {"conv1/weight", "conv2/data"}
    assert {k for k in g if k.split("/")[1] in ("weight", "data")} == decayed
    for k, after in net.state_dict().items():
        if k not in g:  # structure arrays: untouched
            assert np.array_equal(after, before[k]), k
            continue
        want = before[k] - lr * (g[k] + (lam * before[k] if k in decayed else 0.0))
        assert_close(after, want, 1e-15, f"{k} after one step")
        if grads == "zero":
            moved = not np.array_equal(after, before[k])
            assert moved == (k in decayed and before[k].any()), f"{k}: decay applied = {moved}"


# ---------------------------------------------------------------------------------------------
# Layer-level errors


def test_convert_to_an_unknown_kind():
    net = lenet5(dtype=np.float64)
    with pytest.raises(ValueError, match=r"^conv2 \(Convolution\): unknown weight format "
                                         r"'zstd'; known: \[") as e:
        net.convert("conv2", "zstd")
    for kind in FORMATS:
        assert repr(kind) in str(e.value)
    with pytest.raises(ValueError, match=r"^ip1 \(InnerProduct\): unknown weight format 'CSR'"):
        net.layer("ip1").convert("CSR")
    with pytest.raises(ValueError, match=r"pool1 \(Pooling\) has no weight to convert"):
        net.convert("pool1", "csr")
    with pytest.raises(KeyError, match="no layer named 'conv3'"):
        net.convert("conv3", "csr")
    with pytest.raises(ValueError, match=r"^c \(Convolution\): unknown weight format 'zstd'"):
        Conv2d("c", 4, 3, weight_format={"kind": "zstd"})


@pytest.mark.parametrize("kind,options,match", [
    ("codebook", dict(bits=9), "bits must be an integer 1..8"),
    ("sparse_codebook", dict(code_bits=9), "bits must be an integer 1..8"),
    ("sparse_codebook", dict(gap_bits=0), "bits must be an integer 1..8"),
    ("csr", dict(bits=4), "bad options"),
    ("sparse_codebook", dict(centroids=[0.5, 1.0]), "centroid 0 must be 0.0"),
], ids=["bits9", "code_bits9", "gap_bits0", "unknown_option", "centroid0"])
def test_convert_errors_name_the_layer(kind, options, match):
    net = lenet5(dtype=np.float64)
    with pytest.raises(ValueError, match=rf"^conv2 \(Convolution\): .*{match}"):
        net.convert("conv2", kind, **options)
    assert net.layer("conv2").weight_format.kind == "dense"  # unchanged


def test_set_weight_format_checks_the_shape(rng):
    net = lenet5(dtype=np.float64)
    conv2 = net.layer("conv2")
    bad = CSRWeight.from_dense(rng.standard_normal((50, 20, 5, 4)))
    with pytest.raises(ValueError, match=re.escape(
            "conv2 (Convolution): a csr weight of shape (50, 20, 5, 4) does not match the "
            "layer's weight shape (50, 20, 5, 5)")):
        conv2.set_weight_format(bad)
    assert conv2.weight_format.kind == "dense"  # unchanged
    with pytest.raises(ValueError, match=r"^ip2 \(InnerProduct\): a codebook weight of shape "
                                         r"\(500, 10\)"):
        net.layer("ip2").set_weight_format(CodebookWeight.from_dense(np.zeros((500, 10))))
    # Another float dtype is cast to the layer's.
    w = rng.standard_normal((50, 20, 5, 5)).astype(np.float32)
    fmt = conv2.set_weight_format(CSRWeight.from_dense(w))
    assert fmt.dtype == F64 and conv2.weight_format is fmt
    assert np.array_equal(conv2.dense_weight(), w.astype(np.float64))
