"""models/zoo.py: the architectures' parameter counts against the papers and the reference
files, SqueezeNet v1.0 against the shipped Deep Compression prototxt, MobileNet against Keras'
own MobileNet, the small variants on 28×28 and 32×32 images, and the initialisations."""

import numpy as np
import pytest

from robustcnn.models.caffe import load_caffe
from robustcnn.models.squeezenet_dc import PROTOTXT
from robustcnn.models.zoo import (build_zoo, compact_for_params, data_init, googlenet,
                                  mobilenet_small, mobilenet_v1, squeezenet_small,
                                  squeezenet_v1_0, squeezenet_v1_1)

# Trainable values (weights, biases, batch-norm scale and shift), as the papers or reference
# files count them: AlexNet/CaffeNet "60 million" (Krizhevsky et al.; Caffe's bvlc files hold
# 60,965,224), VGG-16 138 M (Simonyan & Zisserman, Table 2), GoogLeNet as Caffe's
# bvlc_googlenet deploy net, SqueezeNet v1.0 1,248,424 (Iandola et al.: 1.2 M), v1.1
# 1,235,496, MobileNet 4.2 M (Howard et al., Table 8).
COUNTS = {"googlenet": 6998552, "squeezenet_v1_0": 1248424, "squeezenet_v1_1": 1235496,
          "mobilenet_v1": 4231976}
SLOW_COUNTS = {"alexnet": 60965224, "caffenet": 60965224, "vgg16": 138357544}


def _check(name, count, output):
    net = build_zoo(name)
    assert net.num_params() == count, name
    assert net.output_shape == output


@pytest.mark.parametrize("name", COUNTS)
def test_parameter_counts(name):
    _check(name, COUNTS[name], (1000, 1, 1) if name.startswith("squeezenet") else (1000,))


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_COUNTS)
def test_parameter_counts_of_the_large_nets(name):
    _check(name, SLOW_COUNTS[name], (1000,))
    net = build_zoo(name)
    # N(0, 0.01) weights, as the papers and Caffe's files draw them
    w = net.layer("conv1" if name != "vgg16" else "conv1_1").params["weight"]
    assert abs(float(w.std()) - 0.01) < 0.001


def test_squeezenet_v1_0_is_the_shipped_deploy_file():
    """Layer for layer (names, shapes, fillers) the Deep Compression SqueezeNet deploy net."""
    ours = squeezenet_v1_0()
    ref = load_caffe(PROTOTXT)
    ref_layers = [l.config() for l in ref.layers]
    # The deploy file ends at the global pool; the zoo adds the softmax.
    assert [l.config() for l in ours.layers][:-1] == ref_layers
    assert ours.layers[-1].type == "Softmax"
    w = ours.layer("conv_final").params["weight"]
    assert abs(float(w.std()) - 0.01) < 0.001  # gaussian std 0.01, as the file's filler


def test_squeezenet_v1_1_shapes():
    net = squeezenet_v1_1()
    assert net.blob_shapes["conv1"] == (64, 113, 113)
    assert net.blob_shapes["pool5"] == (256, 14, 14)  # after fire5, ceil-mode pooling
    assert net.layer("conv1").kernel == (3, 3)


def test_googlenet_inception_outputs():
    net = googlenet()
    # Szegedy et al. 2015, Table 1: output sizes of the inception modules
    expected = {"3a": (256, 28, 28), "3b": (480, 28, 28), "4a": (512, 14, 14),
                "4e": (832, 14, 14), "5b": (1024, 7, 7)}
    for name, shape in expected.items():
        assert net.blob_shapes[f"inception_{name}/output"] == shape


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75, 1.0])
def test_mobilenet_matches_keras_mobilenet(alpha, keras_app):
    """The same trainable parameter count as Keras' MobileNet and the same feature map sizes."""
    model = keras_app.applications.MobileNet(alpha=alpha, weights=None, input_shape=(224, 224, 3))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    net = mobilenet_v1(alpha)
    assert net.num_params() == trainable
    ours = net.blob_shapes["conv13_pw"]
    theirs = model.get_layer("conv_pw_13_relu").output.shape[1:]
    assert (ours[1], ours[2], ours[0]) == tuple(theirs)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_inception_v3_matches_keras_inception_v3(keras_app):
    """Keras' InceptionV3 (the reference implementation's widths): the same module outputs, and
    its trainable count plus one batch-norm scale per channel (ours carry one, its do not)."""
    from robustcnn.models.zoo import inception_v3

    model = keras_app.applications.InceptionV3(weights=None)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    net = inception_v3()
    scales = sum(l.params["gamma"].size for l in net.layers if l.type == "BatchNorm")
    assert net.num_params() == trainable + scales == 23834568
    for i in range(11):
        c, h, w = net.blob_shapes[f"mixed{i}"]
        assert (h, w, c) == tuple(model.get_layer(f"mixed{i}").output.shape[1:]), i


@pytest.fixture(scope="module")
def keras_app():
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras", reason="keras (test extra) checks MobileNet")


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)])
@pytest.mark.parametrize("make", [squeezenet_small, mobilenet_small,
                                  lambda **kw: mobilenet_small(0.25, **kw)],
                         ids=["squeezenet_small", "mobilenet_small", "mobilenet_small_0.25"])
def test_small_variants_run_on_small_images(make, shape):
    net = make(input_shape=shape)
    x = np.random.default_rng(0).standard_normal((2,) + shape).astype(np.float32)
    p = net.forward(x).reshape(2, -1)
    assert p.shape == (2, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    last = [net.blob_shapes[l.bottom[0]] for l in net.layers if l.type == "Pooling"][-1]
    assert last[1:] == ((3, 3) if net.name == "squeezenet_small" else (4, 4))


def test_small_variant_counts():
    """Definitional counts (no paper to match): they change only if the architecture does."""
    assert squeezenet_small().num_params() == 727626
    assert mobilenet_small().num_params() == 3217226
    assert mobilenet_small(0.5, input_shape=(1, 28, 28)).num_params() == 823434


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        build_zoo("resnet")
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\]"):
        mobilenet_v1(1.5)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_inception_v3_computes_what_keras_inception_v3_computes(keras_app, tmp_path):
    """Keras' InceptionV3's weights (batch-norm statistics drawn at random) copied into the zoo's
    layers in creation order — both build the branches in the same order — give the same
    output: the zoo's wiring, paddings and pools are Keras'."""
    from robustcnn.models.keras import load_keras
    from robustcnn.models.zoo import inception_v3

    model = keras_app.applications.InceptionV3(weights=None, classifier_activation=None)
    rng = np.random.default_rng(0)
    for w in model.weights:
        if "variance" in w.path:
            w.assign(rng.uniform(0.5, 1.5, tuple(w.shape)).astype(np.float32))
        elif "mean" in w.path or "beta" in w.path:
            w.assign((rng.standard_normal(tuple(w.shape)) * 0.1).astype(np.float32))
    model.save(tmp_path / "inception_v3.h5")
    keras_net = load_keras(tmp_path / "inception_v3.h5")
    zoo = inception_v3()

    def created(layer):  # Keras numbers its layers as it creates them: conv2d, conv2d_1, …
        stem, _, number = layer.name.rpartition("_")
        return (layer.type, int(number) if number.isdigit() and stem else 0)

    pairs = []
    for kind in ("Convolution", "BatchNorm", "InnerProduct"):
        ours = [l for l in zoo.layers if l.type == kind]
        theirs = sorted((l for l in keras_net.layers if l.type == kind), key=created)
        assert len(ours) == len(theirs), kind
        pairs += zip(ours, theirs)
    for a, b in pairs:
        for key in set(a.params) | set(a.buffers):
            target = a.params.get(key, a.buffers.get(key))
            target[...] = {**b.params, **b.buffers}[key]
    zoo.layers[-1:] = []  # (compare the logits: Keras' model ends at the dense layer here)
    x = rng.uniform(-1, 1, (1, 3, 299, 299)).astype(np.float32)
    expected = model.predict(x.transpose(0, 2, 3, 1), verbose=0)
    from helpers import assert_close

    assert_close(zoo.logits(x), expected, 1e-5, "inception_v3 logits vs Keras", atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The compact variants at a parameter budget (compact_for_params) and their trainability


def _logit_scale(net, seed=0):
    """Standard deviation of the logits for inputs like images in [0, 1]."""
    x = np.random.default_rng(seed).random((8,) + net.input_shape).astype(np.float32)
    return float(net.logits(x).std())


def test_small_variants_keep_the_signal():
    """The engine's batch norm uses running statistics (a fresh net's are 0 and 1), so nothing
    rescales the activations while training from scratch: with glorot weights the logits of
    mobilenet_small(0.25) came out ~1e-5 of the input scale and the net did not learn."""
    for net in (mobilenet_small(0.25, input_shape=(1, 28, 28)),
                mobilenet_small(0.05, blocks=5, input_shape=(1, 28, 28)),
                squeezenet_small(input_shape=(1, 28, 28)), squeezenet_small(0.25)):
        assert _logit_scale(net) > 1e-3, net.name
    w = mobilenet_small(0.5).layer("conv3_pw").params["weight"]  # He et al.: N(0, 2/fan_in)
    assert float(w.std()) == pytest.approx(np.sqrt(2 / w.shape[1]), rel=0.05)
    w = squeezenet_small().layer("fire4/conv3x3_2").params["weight"]
    assert float(w.std()) == pytest.approx(np.sqrt(2 / (w.shape[1] * 9)), rel=0.05)


@pytest.mark.parametrize("blocks", [1, 3, 5, 13])
def test_mobilenet_small_blocks(blocks):
    net = mobilenet_small(0.25, blocks=blocks, input_shape=(1, 28, 28))
    dw = [l for l in net.layers if l.name.endswith("_dw")]
    assert len(dw) == blocks and all(l.groups == l.weight_shape[0] for l in dw)
    final = net.blob_shapes["pool"]
    last = net.blob_shapes[[l.name for l in net.layers if l.name.endswith("_pw")][-1]]
    assert last[1:] == {1: (28, 28), 3: (14, 14), 5: (4, 4), 13: (4, 4)}[blocks]
    assert final == (last[0], 1, 1)
    assert net.name == "mobilenet_small_0.25" + ("" if blocks == 13 else f"_b{blocks}")


def test_squeezenet_small_width():
    net = squeezenet_small(0.25, input_shape=(1, 28, 28))
    assert net.layer("conv1").out_channels == 16
    assert net.layer("fire9/conv1x1_1").out_channels == 16  # 64 · 0.25
    assert net.layer("conv_final").out_channels == 10  # the classes are not scaled
    assert net.name == "squeezenet_small_0.25"
    assert squeezenet_small(0.001).layer("fire2/conv1x1_1").out_channels == 2  # at least 2
    assert net.layers[-3].name == "conv_final" and net.layers[-2].type == "Pooling"  # no ReLU


@pytest.mark.parametrize("arch,extra", [("mobilenet_small", {"blocks": 5}),
                                        ("mobilenet_small", {}), ("squeezenet_small", {})])
@pytest.mark.parametrize("params", [43_000, 11_000, 5_000])
def test_compact_for_params(arch, extra, params):
    kwargs = compact_for_params(arch, params, input_shape=(1, 28, 28), **extra)
    assert {k: v for k, v in kwargs.items() if k not in ("alpha", "width")} == \
        {"input_shape": (1, 28, 28), **extra}
    assert build_zoo(arch, **kwargs).num_params() == pytest.approx(params, rel=0.08)


def test_compact_for_params_errors():
    with pytest.raises(ValueError, match="'vgg16' has no width knob"):
        compact_for_params("vgg16", 1000)
    with pytest.raises(ValueError, match=r"parameters \(alpha 0.001 to 1\); 10,000,000 is"):
        compact_for_params("mobilenet_small", 10_000_000)
    with pytest.raises(ValueError, match="is outside"):
        compact_for_params("squeezenet_small", 100)
    with pytest.raises(ValueError, match="alpha is what it chooses"):
        compact_for_params("mobilenet_small", 5000, alpha=0.5)
    with pytest.raises(ValueError, match=r"blocks must be an integer in 1\.\.13"):
        mobilenet_small(0.5, blocks=14)
    with pytest.raises(ValueError, match=r"width multiplier must be in \(0, 4\]"):
        squeezenet_small(0)


@pytest.mark.parametrize("arch,extra", [("mobilenet_small", {"blocks": 5}),
                                        ("squeezenet_small", {}), ("resnet_small", {}),
                                        ("vgg_small", {})])
def test_compact_nets_learn_a_batch(arch, extra):
    """A few SGD steps on one batch lower the loss of the smallest budget's net."""
    from robustcnn.engine.train import SGD

    net = build_zoo(arch, **compact_for_params(arch, 5000, input_shape=(1, 28, 28), **extra))
    rng = np.random.default_rng(0)
    x = rng.random((32, 1, 28, 28)).astype(np.float32)
    x[:16, :, :14] += 1.0  # two classes told apart by the upper half's brightness
    y = np.repeat([0, 1], 16)
    net.train()
    opt = SGD(0.9, 5e-4)
    first, _ = net.loss_and_grad(x, y)
    for _ in range(15):
        opt.step(net, 0.02)
        loss, _ = net.loss_and_grad(x, y)
    assert np.isfinite(loss) and loss < 0.8 * first


def test_data_init_normalises_every_layer():
    rng = np.random.default_rng(0)
    x = (rng.random((64, 1, 28, 28)) * (rng.random((64, 1, 1, 1)) + 0.2)).astype(np.float32)
    for net in (mobilenet_small(0.1, blocks=4, input_shape=(1, 28, 28)),
                squeezenet_small(0.1, input_shape=(1, 28, 28))):
        before = net.logits(x)
        assert data_init(net, x) is net
        checked = 0
        for layer, (y, *_) in net.run_layers(x, train=False):
            if layer.type == "BatchNorm" or (  # mean 0, variance ~1 after the batch norm
                    layer.type == "Convolution" and layer.bias and layer.name != "conv_final"):
                np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-3)
                np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-2)
                checked += 1
        assert checked >= 8
        assert np.isfinite(net.logits(x)).all() and not np.allclose(net.logits(x), before)
    with pytest.raises(ValueError, match=r"at least 2 inputs of shape \(1, 28, 28\)"):
        data_init(mobilenet_small(0.1, input_shape=(1, 28, 28)), x[:1])


def lsuv_reference(net, x, eps=1e-6):
    """LSUV as its definition reads, in float64: each batch norm's mean set from its input and
    each dense Conv2d/Linear (but the one writing the logits) rescaled per output channel, then
    the layer run again (``data_init`` corrects the outputs arithmetically instead)."""
    for step in net.run_layers(x, train=False):
        layer = step.layer
        if layer.type == "BatchNorm":
            layer.buffers["mean"][...] = step.inputs[0].mean(axis=(0, 2, 3))
            step.rerun()
        elif layer.type in ("Convolution", "InnerProduct") and \
                net.logits_blob() not in step.tops:
            y = step.outputs[0]
            axes = (0,) + tuple(range(2, y.ndim))
            std = np.where(y.var(axis=axes) > eps, y.std(axis=axes), 1.0)
            w = layer.params["weight"]
            w /= std.reshape((-1,) + (1,) * (w.ndim - 1))
            if layer.bias:
                layer.params["bias"][...] = (layer.params["bias"] - y.mean(axis=axes)) / std
            step.rerun()
    return net


@pytest.mark.parametrize("make", [
    lambda: mobilenet_small(0.1, blocks=4, input_shape=(1, 28, 28), seed=2),
    lambda: squeezenet_small(0.1, input_shape=(1, 28, 28), seed=2)],
    ids=["mobilenet", "squeezenet"])
def test_data_init_matches_a_float64_reference(make):
    x = np.random.default_rng(1).random((32, 1, 28, 28)).astype(np.float32)
    net = make()
    reference = lsuv_reference(net.copy(dtype=np.float64), x.astype(np.float64))
    data_init(net, x)
    state = net.state_dict()
    for key, value in reference.state_dict().items():
        np.testing.assert_allclose(state[key], value, rtol=2e-4, atol=1e-6, err_msg=key)


# ---------------------------------------------------------------------------------------------
# The CIFAR nets: resnet_small (He et al. 2016, Section 4.2) and vgg_small


def _scaled(c, width):
    return c if width == 1 else max(2, int(round(c * width)))


def resnet_count(blocks, width=1.0, in_channels=3, classes=10, projections=True):
    """The CIFAR ResNet's trainable values from its definition: a 3×3 convolution and 3 stages
    of ``blocks`` blocks of two 3×3 convolutions, each convolution without bias and with a
    batch norm (scale and shift); a 1×1 projection (and batch norm) where a stage widens."""
    c = [_scaled(k, width) for k in (16, 32, 64)]
    n = 9 * in_channels * c[0] + 2 * c[0]
    previous = c[0]
    for out in c:
        for b in range(blocks):
            n += 9 * (previous if b == 0 else out) * out + 9 * out * out + 4 * out
        if previous != out and projections:
            n += previous * out + 2 * out
        previous = out
    return n + c[2] * classes + classes


def vgg_count(width=1.0, fc=256, in_channels=3, side=32, classes=10, batch_norm=True):
    n, previous = 0, in_channels
    for channels in (64, 64, 128, 128, 256, 256):
        out = _scaled(channels, width)
        n += 9 * previous * out + (2 * out if batch_norm else out)
        previous = out
    for _ in range(3):
        side = -(-side // 2)  # 2×2 pools, ceil mode
    hidden = _scaled(fc, width)
    return n + previous * side * side * hidden + hidden + hidden * classes + classes


def test_resnet_small_counts_are_he_et_al_cifar_resnets():
    """ResNet-20/32/44/56: 0.27, 0.46, 0.66, 0.85 M parameters (He et al. 2016, Table 6) with
    the paper's parameter-free shortcuts (option A); ours add 1×1 projections (option B)."""
    from robustcnn.models.zoo import resnet_small

    for blocks, paper in ((3, 0.27e6), (5, 0.46e6), (7, 0.66e6), (9, 0.85e6)):
        assert resnet_count(blocks, projections=False) == pytest.approx(paper, rel=0.02)
    assert resnet_small().num_params() == resnet_count(3) == 272474
    net = resnet_small(0.5, blocks=2, input_shape=(1, 28, 28), num_classes=7)
    assert net.num_params() == resnet_count(2, 0.5, in_channels=1, classes=7)
    weighted = [l for l in resnet_small().layers if l.type in ("Convolution", "InnerProduct")]
    assert len([l for l in weighted if not l.name.endswith("/proj")]) == 20  # ResNet-20
    assert resnet_small().name == "resnet20_small"


def test_vgg_small_counts():
    from robustcnn.models.zoo import vgg_small

    assert vgg_small().num_params() == vgg_count() == 2197706
    assert vgg_small(batch_norm=False).num_params() == vgg_count(batch_norm=False)
    assert vgg_small(0.25, fc=64, input_shape=(1, 28, 28)).num_params() == \
        vgg_count(0.25, 64, in_channels=1, side=28)
    assert vgg_small().layer("fc1").weight_shape == (256, 256 * 4 * 4)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)])
@pytest.mark.parametrize("arch", ["resnet_small", "vgg_small"])
def test_cifar_nets_run_on_small_images(arch, shape):
    net = build_zoo(arch, input_shape=shape)
    x = np.random.default_rng(0).random((2,) + shape).astype(np.float32)
    p = net.forward(x).reshape(2, -1)
    assert p.shape == (2, 10) and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    side = shape[1]
    if arch == "resnet_small":  # 32 → 16 → 8; 28 → 14 → 7
        assert net.blob_shapes["res1_3/sum"] == (16, side, side)
        assert net.blob_shapes["res3_3/sum"] == (64, -(-side // 4), -(-side // 4))
    else:  # three 2×2 pools, ceil mode: 32 → 4, 28 → 4
        assert net.blob_shapes["pool3"] == (256, 4, 4)


def test_resnet_small_wiring():
    """Identity shortcuts inside a stage, 1×1 stride-2 projections where it widens, the ReLU
    after the sum."""
    from robustcnn.models.zoo import resnet_small

    net = resnet_small()
    assert net.layer("res1_2/sum").bottom == ["res1_2/conv2", "res1_1/sum"]
    assert net.layer("res2_1/sum").bottom == ["res2_1/conv2", "res2_1/proj"]
    proj = net.layer("res2_1/proj")
    assert proj.kernel == (1, 1) and proj.stride == (2, 2) and proj.bottom == ["res1_3/sum"]
    assert net.layer("res2_1/conv1").stride == (2, 2)
    assert not any(l.name.startswith("res1_") and l.name.endswith("/proj") for l in net.layers)
    assert [l.type for l in net.layers if l.name.startswith("res3_3/")][-2:] == ["Eltwise",
                                                                                 "ReLU"]


def test_cifar_nets_bad_arguments():
    from robustcnn.models.zoo import resnet_small, vgg_small

    with pytest.raises(ValueError, match=r"resnet_small: blocks must be an integer in 1\.\.64"):
        resnet_small(blocks=0)
    with pytest.raises(ValueError, match=r"resnet_small: the width multiplier must be in"):
        resnet_small(0)
    with pytest.raises(ValueError, match=r"vgg_small: fc must be a positive integer"):
        vgg_small(fc=0)
    with pytest.raises(ValueError, match=r"vgg_small: the width multiplier must be in"):
        vgg_small(5)


@pytest.mark.parametrize("arch,params", [("resnet_small", 20_000), ("resnet_small", 220_000),
                                         ("vgg_small", 55_000)])
def test_fresh_cifar_nets_at_a_parameter_budget(arch, params):
    """fresh_net sizes them by their width knob (within compact_for_params' 8% as the other
    small nets) and initialises them from data (data_init)."""
    from robustcnn.models.architectures import fresh_net

    x = np.random.default_rng(0).random((16, 3, 32, 32)).astype(np.float32)
    net, kwargs = fresh_net(arch, x, 10, params=params)
    assert set(kwargs) == {"width"}
    assert net.num_params() == pytest.approx(params, rel=0.08)
    assert np.isfinite(net.logits(x)).all()


def test_resnet_small_gradients_by_finite_differences():
    """A tiny ResNet in float64 (two stages' worth of blocks: identity and projection
    shortcuts), its batch norms' statistics randomised: d loss / d x and d loss / d weights
    through the residual sums against central differences."""
    from helpers import check_gradients
    from net_helpers import randomised

    from robustcnn.models.zoo import resnet_small

    net = randomised(resnet_small(0.125, blocks=2, input_shape=(2, 8, 8), num_classes=3,
                                  dtype=np.float64), seed=1)
    rng = np.random.default_rng(0)
    x, labels = rng.random((3, 2, 8, 8)), np.array([0, 2, 1])

    def losses(x):
        p = net.logits(x)
        p = p - p.max(axis=1, keepdims=True)
        return np.log(np.exp(p).sum(axis=1)) - p[np.arange(len(labels)), labels]

    loss, dx = net.loss_and_input_grad(x, labels)
    np.testing.assert_allclose(loss, losses(x), rtol=1e-12)
    check_gradients(losses, [x], np.ones(3), (dx,), samples=24, what="resnet dL/dx")
    net.loss_and_grad(x, labels)
    for name in ("res1_1/conv1/weight", "res2_1/proj/weight", "res2_2/conv2/weight",
                 "res2_2/conv2/bn/gamma", "conv1/weight"):
        layer, key = name.rsplit("/", 1)
        param, grad = net.layer(layer).params[key], np.copy(net.grads[layer][key])
        original = param.copy()

        def mean_loss(p, param=param):
            param[...] = p
            return losses(x).mean()

        try:
            check_gradients(mean_loss, [original.copy()], 1.0, (grad,), samples=6,
                            what=f"resnet d loss / d {name}")
        finally:
            param[...] = original
