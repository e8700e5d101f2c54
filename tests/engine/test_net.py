"""engine/net.py (with engine/layers.py): whole-net gradients by finite differences in float64,
a branching DAG, per-example input gradients, spec round trips, state dicts, error messages,
batched inference, train/eval mode."""

import json

import numpy as np
import pytest
import scipy.special
from helpers import F32, F64, assert_close, check_gradients

from robustcnn.engine import (LRN, AvgPool2d, BatchNorm, Concat, Conv2d, Dropout, EltwiseMax,
                              EltwiseProd, EltwiseSum, Flatten, GlobalAvgPool2d, Linear,
                              LRNWithin, MaxPool2d, Net, Pad2d, Permute, PReLU, ReLU, ReLU6,
                              Reshape, Scale, Softmax)
from robustcnn.models.lenet import lenet5

# ---------------------------------------------------------------------------------------------
# Nets and references


def ce_ref(logits, labels):
    """Per-example cross-entropy, from SciPy's logsumexp."""
    return scipy.special.logsumexp(logits, axis=1) - logits[np.arange(len(logits)), labels]


def randomise(net, seed=0):
    """Nonzero biases, BN statistics and affine parameters, so every gradient path is exercised."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if "bias" in layer.params:
            layer.params["bias"][...] = 0.1 * rng.standard_normal(layer.params["bias"].shape)
        if isinstance(layer, BatchNorm):
            C = layer.buffers["mean"].shape[0]
            layer.buffers["mean"][...] = 0.2 * rng.standard_normal(C)
            layer.buffers["var"][...] = rng.uniform(0.5, 2.0, C)
            layer.params["gamma"][...] = rng.uniform(0.5, 1.5, C)
            layer.params["beta"][...] = 0.2 * rng.standard_normal(C)
    return net


def lenet(dtype=np.float64):
    return randomise(lenet5(dtype=dtype))


def branching_net(dtype=np.float64):
    """Concat, EltwiseSum with coefficients, an in-place ReLU, blobs read by two layers."""
    return randomise(Net([
        Conv2d("conv_a", 4, kernel=3, padding=1, bottom="data", top="a"),
        ReLU("relu_a", negative_slope=0.1, bottom="a", top="a"),  # in place
        Conv2d("conv_b", 4, kernel=1, bottom="data", top="b"),  # "data" read twice
        EltwiseSum("sum", coeffs=[0.5, -2.0], bottom=["a", "b"], top="s"),
        Concat("cat", bottom=["s", "a"], top="c"),  # "a" (after the ReLU) read twice
        MaxPool2d("pool", kernel=2, stride=2),
        Linear("fc", 5),
    ], (3, 6, 6), dtype=dtype, name="branching"))


def zoo_net(dtype=np.float64):
    """The remaining layer types in one chain, ending in a Softmax (logits are its input)."""
    return randomise(Net([
        Conv2d("conv1", 6, kernel=3, padding=1),
        BatchNorm("bn1"),
        ReLU6("relu6"),
        Conv2d("dw", 6, kernel=3, padding=1, groups=6),
        LRN("lrn", local_size=3, alpha=0.5, beta=0.75, k=1.0),
        AvgPool2d("avg", kernel=3, stride=2, padding=1),
        Dropout("drop", p=0.3),
        MaxPool2d("pool", kernel=2, stride=1),
        Conv2d("pw", 8, kernel=1),
        GlobalAvgPool2d("gap"),
        Flatten("flat"),
        Linear("fc", 5),
        Softmax("prob"),
    ], (3, 7, 7), dtype=dtype, name="zoo"))


def caffe_ops_net(dtype=np.float64):
    """PReLU (per channel and shared), Scale, Eltwise PROD and MAX, LRN within channels, an
    average pool that leaves the padding out, Pad2d, Permute, Reshape, with weights away from
    their initial values."""
    net = randomise(Net([
        Conv2d("conv_a", 4, kernel=3, padding=1, bottom="data", top="a"),
        PReLU("prelu_a", bottom="a", top="a"),
        Conv2d("conv_b", 4, kernel=1, bottom="data", top="b"),
        Scale("scale_b", bias=True, bottom="b", top="b"),
        PReLU("prelu_b", channel_shared=True, bottom="b", top="b"),
        EltwiseProd("prod", bottom=["a", "b"], top="p"),
        EltwiseMax("max", bottom=["p", "a", "b"], top="m"),
        LRNWithin("lrn_within", local_size=3, alpha=0.5, beta=0.75),
        AvgPool2d("avg_inside", kernel=3, stride=1, padding=1, count_pad=False),
        Pad2d("pad", ((0, 1), (1, 0))),
        Permute("permute", (1, 2, 0)),
        Reshape("reshape", (4, 5, -1)),
        Linear("fc", 5),
    ], (3, 4, 4), dtype=dtype, name="caffe_ops"))
    rng = np.random.default_rng(7)
    for layer in net.layers:
        if isinstance(layer, (PReLU, Scale)):
            p = layer.params["slope" if isinstance(layer, PReLU) else "weight"]
            p[...] = rng.uniform(0.2, 1.5, p.shape)
    return net


NETS = {"lenet5": lenet, "branching": branching_net, "zoo": zoo_net, "caffe_ops": caffe_ops_net}


def batch(net, n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n,) + net.input_shape).astype(net.dtype)
    return x, rng.integers(0, net.num_classes, n)


# ---------------------------------------------------------------------------------------------
# Whole-net gradients by finite differences (float64)


@pytest.mark.parametrize("make", NETS.values(), ids=NETS.keys())
def test_loss_and_input_grad_by_finite_differences(make):
    net = make()
    x, labels = batch(net, 3)
    loss, dx = net.loss_and_input_grad(x, labels)
    assert loss.shape == (3,) and loss.dtype == F64 and dx.shape == x.shape and dx.dtype == F64
    assert_close(loss, ce_ref(net.logits(x), labels), 1e-12, "per-example loss")
    # dx[n] = d loss[n] / d x[n], so for weights w: d Σ_n w_n · loss[n] / dx = w · dx.
    w = np.array([1.0, -0.5, 2.0])
    check_gradients(lambda x: ce_ref(net.logits(x), labels), [x], w,
                    (w[:, None, None, None] * dx,), samples=16, what=f"{net.name} dL/dx")


@pytest.mark.parametrize("make", NETS.values(), ids=NETS.keys())
def test_loss_and_grad_by_finite_differences(make):
    net = make()
    x, labels = batch(net, 3, seed=1)
    loss, logits = net.loss_and_grad(x, labels)
    assert isinstance(loss, float)
    assert_close(loss, ce_ref(logits, labels).mean(), 1e-12, "mean loss")
    assert_close(logits, net.logits(x), 1e-12, "logits of loss_and_grad")
    grads = {name: np.copy(net.grads[name.rsplit("/", 1)[0]][name.rsplit("/", 1)[1]])
             for name, _ in net.named_params()}
    assert grads  # every parameter has a gradient
    for name, param in net.named_params():
        assert grads[name].shape == param.shape and grads[name].dtype == F64, name
        original = param.copy()

        def mean_loss(p, param=param):
            param[...] = p
            return ce_ref(net.logits(x), labels).mean()

        try:
            check_gradients(mean_loss, [original.copy()], 1.0, (grads[name],), samples=6,
                            what=f"{net.name} d loss / d {name}")
        finally:
            param[...] = original


def test_float32_net_agrees_with_float64():
    net64 = lenet()
    net32 = net64.astype(np.float32)
    assert net32.dtype == F32 and all(p.dtype == F32 for _, p in net32.named_params())
    x, labels = batch(net64, 4)
    assert_close(net32.logits(x), net64.logits(x), 1e-5, "float32 logits")
    loss32, dx32 = net32.loss_and_input_grad(x.astype(np.float32), labels)
    loss64, dx64 = net64.loss_and_input_grad(x, labels)
    assert loss32.dtype == F32 and dx32.dtype == F32
    assert_close(loss32, loss64, 1e-5, "float32 loss")
    assert_close(dx32, dx64, 1e-4, "float32 dL/dx")
    net32.loss_and_grad(x, labels)
    net64.loss_and_grad(x, labels)
    for layer, grads in net64.grads.items():
        for k, g in grads.items():
            assert_close(net32.grads[layer][k], g, 1e-4, f"float32 {layer}/{k} gradient")


@pytest.mark.parametrize("make", NETS.values(), ids=NETS.keys())
def test_input_gradient_rows_equal_single_example_runs(make):
    net = make()
    x, labels = batch(net, 4, seed=2)
    loss, dx = net.loss_and_input_grad(x, labels)
    for n in range(4):
        l1, d1 = net.loss_and_input_grad(x[n:n + 1], labels[n:n + 1])
        assert_close(l1, loss[n:n + 1], 1e-12, f"loss of example {n}")
        assert_close(d1, dx[n:n + 1], 1e-12, f"dL/dx of example {n}")


def test_net_ending_in_softmax_takes_the_loss_of_its_input():
    net = zoo_net()
    x, labels = batch(net, 3)
    probs, z = net.forward(x), net.logits(x)
    assert not np.allclose(z, probs)  # the logits are the Softmax's input, not its output
    assert_close(scipy.special.softmax(z, axis=1), probs, 1e-12, "softmax of the logits")
    assert_close(net.loss_and_input_grad(x, labels)[0], ce_ref(z, labels), 1e-12, "loss")
    assert net.num_classes == 5 and net.output_shape == (5,)


def test_lenet5_structure():
    net = lenet5()
    assert net.num_params() == 431_080  # Caffe's LeNet-5 (Han et al. 2016, Table 1)
    assert net.output_shape == (10,) and net.num_classes == 10
    assert net.blob_shapes["conv1"] == (20, 24, 24) and net.blob_shapes["pool2"] == (50, 4, 4)
    assert net.blob_shapes["ip1"] == (500,)
    x, _ = batch(net, 2)
    assert net.forward(x).shape == (2, 10) and net.forward(x).dtype == F32


def test_empty_batch():
    net = lenet()
    x = np.zeros((0,) + net.input_shape)
    assert net.forward(x).shape == (0, 10)
    assert net.logits(x).shape == (0, 10)
    loss, dx = net.loss_and_input_grad(x, np.zeros(0, np.int64))
    assert loss.shape == (0,) and dx.shape == x.shape
    assert net.loss_and_grad(x, np.zeros(0, np.int64))[0] == 0.0
    assert np.isnan(net.accuracy(x, np.zeros(0, np.int64)))


def test_zoo_net_empty_batch():
    net = zoo_net()
    x = np.zeros((0,) + net.input_shape)
    assert net.forward(x).shape == (0, 5)
    loss, dx = net.loss_and_input_grad(x, np.zeros(0, np.int64))
    assert loss.shape == (0,) and dx.shape == x.shape


# ---------------------------------------------------------------------------------------------
# Spec and state


@pytest.mark.parametrize("make", NETS.values(), ids=NETS.keys())
def test_spec_round_trip_through_json(make):
    net = make()
    for _, p in net.named_params():  # weights that a fresh net (seed 0) cannot have
        p *= 1.5
    text = json.dumps(net.spec())
    other = Net.from_spec(text)
    assert other.spec() == net.spec()
    x, _ = batch(net, 3)
    assert not np.allclose(other.forward(x), net.forward(x))  # (the test can fail)
    other.load_state_dict(net.state_dict())
    # Deliberately exact: same architecture, same weights, same code path → same bits.
    assert np.array_equal(other.forward(x), net.forward(x))
    copy = net.copy()
    assert np.array_equal(copy.forward(x), net.forward(x))
    assert not np.shares_memory(copy.state_dict()[next(iter(net.state_dict()))],
                                net.state_dict()[next(iter(net.state_dict()))])


def test_state_dict_includes_buffers():
    net = zoo_net()
    state = net.state_dict()
    assert {"bn1/mean", "bn1/var", "bn1/gamma", "bn1/beta", "conv1/weight", "fc/bias"} <= set(state)
    assert "bn1/mean" not in dict(net.named_params())


def test_state_dict_mismatch_names_keys():
    net = lenet5()
    state = dict(net.state_dict())
    del state["conv1/bias"]
    state["bogus/weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as e:
        net.load_state_dict(state, source="model.npz")
    msg = str(e.value)
    assert msg.startswith("model.npz: does not match lenet5"), msg
    assert "missing ['conv1/bias']" in msg and "unexpected ['bogus/weight']" in msg, msg


def test_state_dict_bad_values():
    net = lenet5()
    state = {k: v.copy() for k, v in net.state_dict().items()}
    bad = dict(state, **{"ip2/weight": np.zeros((10, 499), np.float32)})
    with pytest.raises(ValueError, match=r"ip2 \(InnerProduct\): weight has shape \(10, 499\), "
                                         r"the layer expects \(10, 500\)"):
        net.load_state_dict(bad)
    bad = dict(state, **{"ip2/bias": np.zeros(10, np.int64)})
    with pytest.raises(TypeError, match="ip2/bias has dtype int64, expected floats"):
        net.load_state_dict(bad)
    bad = dict(state, **{"ip2/bias": np.full(10, np.nan, np.float32)})
    with pytest.raises(ValueError, match="ip2/bias has non-finite values"):
        net.load_state_dict(bad)


def test_bad_specs():
    with pytest.raises(ValueError, match="not valid JSON"):
        Net.from_spec("{")
    with pytest.raises(ValueError, match="not a robustcnn architecture spec"):
        Net.from_spec({"layers": []})
    spec = lenet5().spec()
    with pytest.raises(ValueError, match="version 99 is not supported"):
        Net.from_spec(dict(spec, version=99))
    spec["layers"][0]["class"] = "os.system"
    with pytest.raises(ValueError, match="unknown layer class 'os.system'"):
        Net.from_spec(spec)


# ---------------------------------------------------------------------------------------------
# Building errors


def test_unknown_bottom_blob_names_the_layer():
    with pytest.raises(ValueError, match=r"conv2 \(Convolution\): input blob 'nope' is not made "
                                         r"by any earlier layer"):
        Net([Conv2d("conv1", 2, 3), Conv2d("conv2", 2, 1, bottom="nope")], (1, 5, 5))


def test_duplicate_layer_names_are_rejected():
    with pytest.raises(ValueError, match="two layers are named 'conv1'"):
        Net([Conv2d("conv1", 2, 3), ReLU("conv1")], (1, 5, 5))


def test_layer_setup_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"conv2 \(Convolution\): kernel 5x5 .* does not fit"):
        Net([Conv2d("conv1", 2, 3), Conv2d("conv2", 2, 5)], (1, 5, 5))
    with pytest.raises(ValueError, match=r"cat \(Concat\): input 1 shape \(2, 1, 1\) does not "
                                         r"match input 0 shape \(2, 3, 3\)"):
        Net([Conv2d("c1", 2, 3, bottom="data", top="p"), Conv2d("c2", 2, 5, bottom="data", top="q"),
             Concat("cat", bottom=["p", "q"])], (1, 5, 5))
    with pytest.raises(ValueError, match=r"sum \(Eltwise\): 1 coefficients for 2 inputs"):
        Net([Conv2d("c1", 2, 3, bottom="data", top="p"), Conv2d("c2", 2, 3, bottom="data", top="q"),
             EltwiseSum("sum", coeffs=[1.0], bottom=["p", "q"])], (1, 5, 5))
    with pytest.raises(ValueError, match=r"pool \(Pooling\): padding"):
        Net([MaxPool2d("pool", 2, padding=2)], (1, 5, 5))


# ---------------------------------------------------------------------------------------------
# Input checks and overflow


def test_wrong_input_shape_or_non_finite_input():
    net = lenet5()
    for x in (np.zeros((2, 1, 27, 28), np.float32), np.zeros((1, 28, 28), np.float32),
              np.zeros((2, 3, 28, 28), np.float32)):
        with pytest.raises(ValueError, match=r"lenet5: input shape .* does not match the net's "
                                             r"input \(N,\) \+ \(1, 28, 28\)"):
            net.forward(x)
        with pytest.raises(ValueError, match="does not match the net's input"):
            net.loss_and_input_grad(x, np.zeros(len(x), np.int64))
    x = np.zeros((2, 1, 28, 28), np.float32)
    x[1, 0, 3, 4] = np.nan
    for run in (net.forward, net.logits, lambda x: net.loss_and_input_grad(x, [0, 1]),
                lambda x: net.loss_and_grad(x, [0, 1])):
        with pytest.raises(ValueError, match="lenet5: input has 1 non-finite value"):
            run(x)
    with pytest.raises(TypeError, match="input must be a numpy array"):
        net.forward(x.tolist())
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        net.loss_and_input_grad(np.zeros((2, 1, 28, 28), np.float32), [0, 10])


def test_integer_input_is_converted():
    net = lenet5()
    x = np.random.default_rng(0).integers(0, 2, (2, 1, 28, 28))
    assert_close(net.forward(x), net.forward(x.astype(np.float32)), 0.0, "int input")


def test_overflowing_weights_raise_naming_the_layer():
    net = lenet5()  # float32
    x, labels = batch(net, 2)
    # conv1 passes 1e30 · pixel (finite); conv2 multiplies it by another 1e30: inf in float32.
    net.params["conv1"]["weight"][0, 0, 2, 2] = 1e30
    net.params["conv2"]["weight"][0, 0, 2, 2] = 1e30
    for run in (net.forward, net.logits, lambda x: net.loss_and_input_grad(x, labels),
                lambda x: net.loss_and_grad(x, labels)):
        with pytest.raises(FloatingPointError, match=r"lenet5: conv2 \(Convolution\) produced "
                                                     r"non-finite values"):
            run(x)


# ---------------------------------------------------------------------------------------------
# Batched inference, train/eval mode


@pytest.mark.parametrize("make", [lenet, zoo_net], ids=["lenet5", "zoo"])
@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
def test_logits_predict_accuracy_in_batches(make, dtype):
    net = make(dtype)
    x, labels = batch(net, 7, seed=3)
    single = net.forward(x)
    if isinstance(net.layers[-1], Softmax):
        logits_single = np.log(single)  # softmax(z) = exp(z − lse): log gives z up to a shift
    else:
        logits_single = single
    rtol = 1e-12 if dtype == F64 else 1e-5
    for batch_size in (1, 3, 100):  # one per example, a short last batch, a single batch
        logits = net.logits(x, batch_size=batch_size)
        assert logits.shape == (7, net.num_classes) and logits.dtype == dtype
        shift = (logits - logits_single).mean(axis=1, keepdims=True)
        assert_close(logits - shift, logits_single, rtol, f"logits in batches of {batch_size}")
    predicted = net.predict(x, batch_size=3)
    assert predicted.dtype == np.int64
    assert np.array_equal(predicted, single.argmax(axis=1))
    labels_half = np.where(np.arange(7) % 2 == 0, predicted, (predicted + 1) % net.num_classes)
    assert net.accuracy(x, labels_half, batch_size=3) == pytest.approx(4 / 7)
    assert net.accuracy(x, labels) == pytest.approx(np.mean(single.argmax(axis=1) == labels))


def dropout_net():
    return Net([Linear("ip1", 50), ReLU("relu1"), Dropout("drop1", p=0.5),
                Linear("ip2", 4)], (20,), dtype=np.float64, name="dropnet")


def test_eval_mode_is_deterministic_and_train_mode_drops():
    net = dropout_net()
    x, labels = batch(net, 5)
    assert not net.training
    y1, y2 = net.forward(x), net.forward(x)
    # Deliberately exact: eval mode draws nothing, so two passes give the same bits.
    assert np.array_equal(y1, y2)
    no_dropout = Net([Linear("ip1", 50), ReLU("relu1"), Linear("ip2", 4)], (20,),
                     dtype=np.float64)
    no_dropout.load_state_dict(net.state_dict())
    assert_close(y1, no_dropout.forward(x), 1e-14, "eval dropout is the identity")
    net.train()
    t1, t2 = net.forward(x), net.forward(x)
    assert not np.allclose(t1, y1) and not np.allclose(t1, t2)
    net.seed_dropout(7)
    r1 = net.forward(x)
    net.seed_dropout(7)
    assert np.array_equal(r1, net.forward(x))  # deliberately exact: same seed, same masks
    # The per-call override and net.logits stay in eval mode.
    assert np.array_equal(net.forward(x, train=False), y1)
    assert np.array_equal(net.logits(x), y1)
    net.eval()
    assert not np.allclose(net.forward(x, train=True), y1)


def test_train_mode_gradient_uses_the_forward_mask():
    net = dropout_net()
    x, labels = batch(net, 4, seed=5)

    def loss(x):
        net.seed_dropout(11)
        return net.loss_and_input_grad(x, labels, train=True)[0]

    net.seed_dropout(11)
    _, dx = net.loss_and_input_grad(x, labels, train=True)
    check_gradients(loss, [x], np.ones(4), (dx,), samples=20, what="dropout net dL/dx")
    # loss_and_grad follows net.training.
    net.train()
    net.seed_dropout(11)
    net.loss_and_grad(x, labels)
    g = net.grads["ip1"]["weight"].copy()
    original = net.params["ip1"]["weight"].copy()

    def mean_loss(p):
        net.params["ip1"]["weight"][...] = p
        net.seed_dropout(11)
        return net.loss_and_input_grad(x, labels, train=True)[0].mean()

    try:
        check_gradients(mean_loss, [original.copy()], 1.0, (g,), samples=10,
                        what="dropout net d loss / d ip1/weight")
    finally:
        net.params["ip1"]["weight"][...] = original


# ---------------------------------------------------------------------------------------------
# Layer by layer (run_layers) and the public accessors


@pytest.mark.parametrize("make", NETS.values(), ids=NETS.keys())
def test_run_layers_gives_what_forward_gives(make):
    net = make()
    x, _ = batch(net, 3)
    seen, order = {"data": x}, []
    for step in net.run_layers(x):
        layer, outputs = step  # unpacks as (layer, outputs)
        assert layer is step.layer and outputs is step.outputs
        order.append(layer.name)
        for name, value in zip(step.bottoms, step.inputs):
            assert value is seen[name]  # reads the last version of each blob it names
        for name, y, shape in zip(step.tops, outputs, layer.out_shapes):
            assert y.shape == (3,) + shape
            seen[name] = y
    assert order == [layer.name for layer in net.layers]
    assert_close(seen[net.output], net.forward(x), 1e-14, "output")
    assert_close(seen[net.logits_blob()].reshape(3, -1), net.logits(x), 1e-14, "logits")


def test_run_layers_follows_the_mode_like_forward():
    net = dropout_net()
    x, _ = batch(net, 5)
    net.seed_dropout(3)
    trained = net.forward(x, train=True)
    net.seed_dropout(3)
    *_, last = net.run_layers(x, train=True)
    assert np.array_equal(last.outputs[0], trained)  # deliberately exact: the same masks
    *_, last = net.run_layers(x)  # eval mode, as the net is
    assert_close(last.outputs[0], net.forward(x), 1e-14, "eval mode")


def test_run_layers_goes_on_from_the_callers_outputs():
    """Between steps the caller may change a layer and rerun it, or put its own outputs in:
    either way the later layers see them, as if the net had those weights from the start."""
    net = lenet()
    x, _ = batch(net, 2)
    doubled = net.copy()
    doubled.params["ip1"]["weight"][...] *= 2
    doubled.params["ip1"]["bias"][...] *= 2
    for step in net.run_layers(x):
        if step.layer.name == "ip1":
            step.outputs[0] = 2 * step.outputs[0]
    assert_close(step.outputs[0], doubled.forward(x), 1e-12, "outputs replaced")
    for step in net.run_layers(x):
        if step.layer.name == "ip1":
            before = step.outputs[0].copy()
            step.layer.params["weight"][...] *= 2
            step.layer.params["bias"][...] *= 2
            assert_close(step.rerun()[0], 2 * before, 1e-12, "rerun")
    assert_close(step.outputs[0], doubled.forward(x), 1e-12, "layer changed and rerun")
    assert_close(net.forward(x), doubled.forward(x), 1e-12, "the change stays")


def test_run_layers_errors():
    net = lenet()
    x, _ = batch(net, 2)
    with pytest.raises(ValueError, match="input shape"):  # at the call, not at the first step
        net.run_layers(x[:, :, :5])
    steps = net.run_layers(x)
    next(steps).outputs[0] = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"conv1 \(Convolution\): output 'conv1' must be an "
                                         r"array of shape \(2, 20, 24, 24\), got \(2, 3\)"):
        next(steps)
    steps = net.run_layers(x)
    next(steps).outputs.append(np.zeros((2, 20, 24, 24)))
    with pytest.raises(ValueError, match=r"makes 1 output\(s\); its step holds 2"):
        next(steps)


def test_replaced_outputs_are_cast_to_the_nets_dtype():
    net = lenet(np.float32)
    x, _ = batch(net, 2)
    for step in net.run_layers(x):
        if step.layer.name == "relu1":
            step.outputs[0] = step.outputs[0].astype(np.float64)
        if step.layer.name == "ip2":
            assert step.inputs[0].dtype == np.float32 and step.inputs[0].flags.c_contiguous
    assert_close(step.outputs[0], net.forward(x), 1e-6, "output")


def test_seed_blob_shape_producer_and_logits_blob():
    net = Net([Linear("ip1", 6), ReLU("relu1", bottom="ip1", top="ip1"), Linear("ip2", 3),
               Softmax("prob")], (4,), seed=11, name="tiny")
    assert net.seed == 11 and net.copy().seed == 11
    assert net.blob_shape("data") == (4,) and net.blob_shape("ip1") == (6,)
    assert net.blob_shape("prob") == net.output_shape == (3,)
    assert net.producer("data") is None
    assert net.producer("ip1") is net["relu1"]  # the last writer of an in-place blob
    assert net.producer("prob") is net["prob"]
    assert net.logits_blob() == net.logits_blob("prob") == "ip2"  # the Softmax's input
    assert net.logits_blob("ip1") == "ip1"
    for bad in (net.blob_shape, net.producer, net.logits_blob):
        with pytest.raises(ValueError, match=r"tiny: no blob named 'ip3'; blobs: \['data', "):
            bad("ip3")
    plain = lenet5()
    assert plain.logits_blob() == plain.output == "ip2"
    assert plain.producer(plain.logits_blob()) is plain["ip2"]


def test_plan_names_each_version_of_an_in_place_blob():
    net = Net([Linear("ip1", 6), ReLU("relu1", bottom="ip1", top="ip1"), Linear("ip2", 3),
               Softmax("prob")], (4,), seed=11, name="tiny")
    plan = net.plan()
    assert [(layer.name, ins, outs) for layer, ins, outs in plan] == [
        ("ip1", ["data"], ["ip1"]), ("relu1", ["ip1"], ["ip1@relu1"]),
        ("ip2", ["ip1@relu1"], ["ip2"]), ("prob", ["ip2"], ["prob"])]
    assert net.logits_id == "ip2" and net.blob_shape("ip1@relu1") == (6,)
    plan[0][1].append("changed")  # a copy: the net's own plan is not the caller's to edit
    assert net.plan()[0][1] == ["data"]
    with pytest.raises(ValueError, match="no blob named 'ip1@ip2'"):
        net.blob_shape("ip1@ip2")


def test_parameter_counts_are_every_weight_and_formats_say_larger():
    """Issue 15 point 6: the params column and num_dense_params count every weight of a
    compressed layer (not its centroids); a CSR copy of an unpruned layer is larger."""
    from robustcnn.models.lenet import lenet5

    net = lenet5()
    dense = net.num_dense_params()
    assert dense == net.num_params() == 431_080
    fmt = net.convert("ip1", "csr")  # unpruned: CSR stores an index per weight
    assert "larger than dense float32" in fmt.summary() and "smaller" not in fmt.summary()
    net.convert("ip1", "codebook", bits=4)
    assert net.num_dense_params() == dense  # the architecture did not change
    assert net.num_params() < dense  # what trains: 16 centroids instead of ip1's weights
    table = net.summary()
    total = table.splitlines()[-1].split()
    assert total[:2] == ["total", f"{dense:,}"] and total[2] == f"{net.num_params():,}"
    assert f"Net('lenet5', " in repr(net) and f"{dense:,} parameters, " in repr(net)
