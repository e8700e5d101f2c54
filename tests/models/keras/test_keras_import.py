"""robustcnn.models.keras: the real fer mini-Xception against Keras 3 layer by layer, every
supported layer in small models Keras 3 writes (Sequential and functional), and bad files."""

import json
import re

import h5py
import numpy as np
import pytest
from keras_files import as_keras, engine_blobs, keras_layer_outputs
from helpers import assert_close

from robustcnn.engine import Net
from robustcnn.models.keras import load_keras

# Keras' torch backend warns about NumPy 2's copy keyword on every predict.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def compare(keras, model, net, x, what, rtol=1e-5):
    """Every Keras layer's output against the engine blob holding it → the worst |error|."""
    ours = engine_blobs(net, x.transpose(0, 3, 1, 2))
    theirs = keras_layer_outputs(keras, model, x)
    worst = 0.0
    for name, ref in theirs.items():
        y = as_keras(ours[net.keras_outputs[name]])
        assert_close(y, ref, rtol, f"{what}: {name}", atol=1e-6)
        worst = max(worst, float(np.abs(y - ref).max()))
    return worst


def test_fer_emotion_model_matches_keras_layer_by_layer(fer_model, keras):
    net = load_keras(fer_model)
    model = keras.models.load_model(fer_model, compile=False)
    assert net.input_shape == (1, 64, 64) and net.output_shape == (7,)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert net.num_params() == trainable == 56951
    x = np.random.default_rng(0).uniform(-1, 1, (3, 64, 64, 1)).astype(np.float32)
    compare(keras, model, net, x, "fer")
    assert_close(net.forward(x.transpose(0, 3, 1, 2)), model.predict(x, verbose=0), 0,
                 "fer probabilities", atol=1e-5)


def build(keras, kind):
    """Small Keras 3 models, one per group of layers."""
    L = keras.layers
    if kind == "sequential_dense_after_flatten":
        return keras.Sequential([
            keras.Input((7, 6, 3)),
            L.Conv2D(4, 3, strides=2, padding="same", activation="relu"),  # uneven 'same'
            L.MaxPooling2D(2, padding="same"),
            L.Flatten(),
            L.Dropout(0.3),
            L.Dense(5, activation="softmax"),
        ])
    if kind == "separable_depthwise":
        inp = keras.Input((9, 8, 4))
        a = L.SeparableConv2D(6, 3, padding="same", depth_multiplier=2, use_bias=True)(inp)
        a = L.BatchNormalization(center=False, epsilon=1e-2)(a)
        a = L.ReLU(max_value=6.0)(a)
        b = L.DepthwiseConv2D((3, 2), depth_multiplier=3, padding="same")(inp)
        b = L.Conv2D(6, 1, use_bias=False)(b)
        b = L.BatchNormalization(scale=False)(b)
        s = L.Add()([a, b])
        s = L.ReLU(negative_slope=0.1)(s)
        g = L.GlobalAveragePooling2D()(s)
        return keras.Model(inp, L.Dense(3)(g))
    if kind == "padding_pooling_concat":
        inp = keras.Input((10, 9, 3))
        z = L.ZeroPadding2D(((1, 2), (0, 1)))(inp)
        c1 = L.Conv2D(4, 3, dilation_rate=2, padding="same")(z)
        c2 = L.Conv2D(4, 3, groups=1, padding="same", strides=1)(z)
        cat = L.Concatenate()([c1, c2])
        p = L.AveragePooling2D(2, padding="valid")(cat)
        p = L.AveragePooling2D(3, strides=1, padding="same")(p)  # the mean leaves padding out
        q = L.MaxPooling2D(3, strides=2, padding="same")(cat)
        q = L.GlobalMaxPooling2D(keepdims=False)(q)
        r = L.Reshape((2, 3, -1))(p)
        f = L.Flatten()(r)
        out = L.Concatenate()([f, q])
        return keras.Model(inp, L.Softmax()(L.Dense(4)(out)))
    if kind == "grouped_and_activation_layers":
        return keras.Sequential([
            keras.Input((6, 6, 4)),
            L.Conv2D(6, 3, groups=2, padding="valid"),
            L.Activation("relu6"),
            L.AveragePooling2D(2, strides=2, padding="same"),  # even size: no padding before
            L.Conv2D(2, 1, activation="linear"),
            L.Reshape((-1,)),
            L.Activation("linear"),
            L.Dense(3, activation="softmax"),
        ])
    if kind == "prelu_permute_multiply_maximum":
        inp = keras.Input((5, 4, 3))
        a = L.PReLU(shared_axes=[1, 2])(L.Conv2D(3, 1)(inp))
        m = L.Multiply()([a, inp])
        n = L.Maximum()([m, inp, a])
        p = L.Permute((3, 1, 2))(n)  # (3, 5, 4)
        q = L.PReLU(shared_axes=[1, 2, 3])(L.Permute((2, 3, 1))(p))  # back to (5, 4, 3)
        f = L.Flatten()(L.Permute((2, 1, 3))(q))
        return keras.Model(inp, L.Dense(2)(f))
    raise KeyError(kind)


KINDS = ["sequential_dense_after_flatten", "separable_depthwise", "padding_pooling_concat",
         "grouped_and_activation_layers", "prelu_permute_multiply_maximum"]


def randomise(keras, model, seed):
    """Weights away from their initial values (BatchNorm statistics included)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        value = rng.uniform(0.5, 1.5, shape) if "variance" in w.path else \
            rng.standard_normal(shape) * 0.5
        w.assign(value.astype(np.float32))


@pytest.mark.parametrize("kind", KINDS)
def test_keras3_models_match_keras(kind, keras, tmp_path):
    model = build(keras, kind)
    randomise(keras, model, seed=len(kind))
    path = tmp_path / f"{kind}.h5"
    model.save(path)
    net = load_keras(path)
    x = np.random.default_rng(1).standard_normal((2,) + tuple(model.input_shape[1:])) \
        .astype(np.float32)
    compare(keras, model, net, x, kind)
    again = Net.from_spec(net.spec())  # every layer class it made is a registered one
    again.load_state_dict(net.state_dict())
    assert_close(again.forward(x.transpose(0, 3, 1, 2)), net.forward(x.transpose(0, 3, 1, 2)),
                 0, f"{kind} rebuilt from its spec")


def test_keras2_sequential_config(keras, tmp_path):
    """Keras 2's Sequential layout: ``config`` a bare list of layers, no InputLayer, the first
    layer holding ``batch_input_shape``; weights as Keras writes them."""
    model = build(keras, "grouped_and_activation_layers")
    randomise(keras, model, seed=3)
    path = tmp_path / "k2.h5"
    model.save(path)
    with h5py.File(path, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        layers = [{"class_name": l["class_name"], "config": l["config"]}
                  for l in cfg["config"]["layers"] if l["class_name"] != "InputLayer"]
        layers[0]["config"]["batch_input_shape"] = [None, 6, 6, 4]
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": layers})
        f.attrs["keras_version"] = "2.0.5"
    net = load_keras(path)
    x = np.random.default_rng(2).standard_normal((2, 6, 6, 4)).astype(np.float32)
    assert net.input_name == "input" and net.input_shape == (4, 6, 6)
    assert_close(net.forward(x.transpose(0, 3, 1, 2)), model.predict(x, verbose=0), 1e-5,
                 "Keras 2 Sequential layout", atol=1e-6)


def raises_naming(*fragments):
    return pytest.raises(ValueError, match=re.compile(".*".join(re.escape(str(f))
                                                                for f in fragments), re.DOTALL))


def saved(keras, tmp_path, model):
    path = tmp_path / "m.h5"
    model.save(path)
    return path


def edit_config(path, edit):
    with h5py.File(path, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        edit(cfg)
        f.attrs["model_config"] = json.dumps(cfg)


def test_lambda_and_unknown_layers_are_refused(keras, tmp_path):
    L = keras.layers
    model = keras.Sequential([keras.Input((4,)), L.Dense(3), L.Dense(2)])
    path = saved(keras, tmp_path, model)
    name = model.layers[1].name

    def to(kind):
        def edit(cfg):
            cfg["config"]["layers"][2]["class_name"] = kind
        return edit

    edit_config(path, to("Lambda"))
    with raises_naming(path, f"{name} (Lambda)", "Python code", "never runs"):
        load_keras(path)
    edit_config(path, to("LSTM"))
    with raises_naming(path, f"{name} (LSTM)", "layer class 'LSTM' is not supported"):
        load_keras(path)


def test_zero_strides_are_refused(keras, tmp_path):
    """Found by fuzzing: a stride of 0 (a division by zero in the output size)."""
    L = keras.layers
    model = keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(3, 3, padding="same"),
                              L.MaxPooling2D(2)])
    path = saved(keras, tmp_path, model)
    for index in (1, 2):
        def edit(cfg, index=index):
            cfg["config"]["layers"][index]["config"]["strides"] = [0, 0]
        edit_config(path, edit)
        name = model.layers[index - 1].name
        with raises_naming(path, name, "strides must be an int or two ints >= 1"):
            load_keras(path)
        path = saved(keras, tmp_path, model)


def test_weight_problems_name_file_and_layer(keras, tmp_path):
    L = keras.layers
    model = keras.Sequential([keras.Input((5, 5, 2)), L.Conv2D(3, 3), L.Flatten(), L.Dense(2)])
    path = saved(keras, tmp_path, model)
    conv = model.layers[0].name
    with h5py.File(path, "r+") as f:
        g = f["model_weights"][conv]
        names = g.attrs["weight_names"]
        kernel_name = names[0].decode() if isinstance(names[0], bytes) else names[0]
        del g[kernel_name]
        g.create_dataset(kernel_name, data=np.zeros((3, 3, 2, 4), np.float32))
    with raises_naming(path, f"{conv} (Conv2D)", "kernel has shape (3, 3, 2, 4)",
                       "config implies (3, 3, 2, 3)"):
        load_keras(path)
    with h5py.File(path, "r+") as f:
        del f["model_weights"][conv]
    with raises_naming(path, f"{conv} (Conv2D)", "holds no weights"):
        load_keras(path)


def test_bad_files(tmp_path):
    path = tmp_path / "x.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 40)
    with raises_naming(path, "not a readable HDF5 file"):
        load_keras(path)
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = "{not json"
    with raises_naming(path, "model_config is not JSON"):
        load_keras(path)
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"layers": []}})
    with raises_naming(path, "no layer_names attribute"):
        load_keras(path)


def _mutations():
    from hypothesis import strategies as st

    values = st.sampled_from([None, 0, -1, 1, 3, 2**40, 1.5, "same", "valid", "relu", "x", [],
                              [1], [3, 3], [2**31, 1], {}, {"name": "x"}, True])
    return st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), values),
                    min_size=1, max_size=3)


def _paths(node, prefix=()):
    """Every (path, value) of a JSON tree."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def test_mutated_configs_give_a_net_or_a_value_error(fer_model, tmp_path_factory):
    """The fer model's JSON with values replaced at random places: a Net or a ValueError
    naming the file, never another exception."""
    from hypothesis import HealthCheck, given, settings

    original = h5py.File(fer_model, "r").attrs["model_config"]
    original = json.loads(original.decode() if isinstance(original, bytes) else original)
    path = tmp_path_factory.mktemp("fuzz") / "mutated.h5"
    import shutil

    shutil.copy(fer_model, path)

    @settings(max_examples=80, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(_mutations())
    def run(edits):
        cfg = json.loads(json.dumps(original))
        for where, _, value in edits:
            paths = [p for p, _ in _paths(cfg) if p]
            target = paths[where % len(paths)]
            parent = cfg
            for k in target[:-1]:
                parent = parent[k]
            parent[target[-1]] = json.loads(json.dumps(value))  # a fresh copy each time
        with h5py.File(path, "r+") as f:
            f.attrs["model_config"] = json.dumps(cfg)
        try:
            load_keras(path)
        except ValueError as e:
            assert str(path) in str(e), str(e)

    run()


def test_truncated_files_are_refused(fer_model, tmp_path):
    data = fer_model.read_bytes()
    path = tmp_path / "cut.h5"
    for cut in (0, 100, 2048, len(data) // 3, len(data) // 2, len(data) - 1000, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=re.escape(str(path))):
            load_keras(path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["MobileNet", "MobileNetV2", "InceptionV3", "ResNet50",
                                  "Xception", "DenseNet121", "VGG16"])
def test_keras_applications(name, keras, tmp_path):
    """Keras' own ImageNet architectures, batch-norm statistics drawn at random, written as
    legacy .h5: the pooled features (the layer before the classifier) and the probabilities."""
    model = getattr(keras.applications, name)(weights=None)
    rng = np.random.default_rng(0)
    for w in model.weights:
        if "variance" in w.path:
            w.assign(rng.uniform(0.5, 1.5, tuple(w.shape)).astype(np.float32))
        elif any(k in w.path for k in ("mean", "beta", "bias")):
            w.assign((rng.standard_normal(tuple(w.shape)) * 0.1).astype(np.float32))
    path = tmp_path / f"{name}.h5"
    model.save(path)
    net = load_keras(path)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    # The engine's batch norms always carry a scale; Keras' leave it out with scale=False.
    scales = sum(int(l.moving_mean.shape[0]) for l in model.layers
                 if type(l).__name__ == "BatchNormalization" and not l.scale)
    x = rng.uniform(-1, 1, (1,) + model.input_shape[1:]).astype(np.float32)
    probe = keras.Model(model.inputs, [model.layers[-2].output, model.output])
    features, probs = (np.asarray(v) for v in probe.predict(x, verbose=0))
    blobs = engine_blobs(net, x.transpose(0, 3, 1, 2))
    ours = as_keras(blobs[net.keras_outputs[model.layers[-2].name]]).reshape(features.shape)
    assert_close(ours, features, 1e-5, f"{name} features", atol=1e-6)
    assert_close(net.forward(x.transpose(0, 3, 1, 2)).reshape(probs.shape), probs, 0,
                 f"{name} probabilities", atol=1e-6)
    assert net.num_params() == trainable + scales
