"""A fully convolutional Caffe net with two heads (MTCNN's P-Net layout: PReLUs, a face
probability map and a box regression map, Zhang et al. 2016): both outputs named and computed,
the net re-planned for a photo-sized input and checked against OpenCV there, and each head
attacked (issue 15 point 2)."""

import numpy as np
import pytest
from caffe_files import opencv_outputs, random_caffe_weights, write_caffe
from helpers import assert_close

from robustcnn.attacks import fgsm, pgd
from robustcnn.models.caffe import load_caffe

pytest.importorskip("google.protobuf", reason="protobuf (the caffe extra) writes the caffemodel")


def conv(name, bottom, out, kernel):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
            f'convolution_param {{ num_output: {out} kernel_size: {kernel} stride: 1 }} }}\n')


def prelu(name, blob):
    return f'layer {{ name: "{name}" type: "PReLU" bottom: "{blob}" top: "{blob}" }}\n'


PNET = ('name: "PNet"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 12\ninput_dim: 12\n'
        + conv("conv1", "data", 10, 3) + prelu("PReLU1", "conv1")
        + 'layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" '
          'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n'
        + conv("conv2", "pool1", 16, 3) + prelu("PReLU2", "conv2")
        + conv("conv3", "conv2", 32, 3) + prelu("PReLU3", "conv3")
        + conv("conv4-1", "conv3", 2, 1) + conv("conv4-2", "conv3", 4, 1)
        + 'layer { name: "prob1" type: "Softmax" bottom: "conv4-1" top: "prob1" }\n')


@pytest.fixture(scope="module")
def pnet(tmp_path_factory):
    """(prototxt path, caffemodel path, net) of a P-Net with random weights."""
    folder = tmp_path_factory.mktemp("pnet")
    shape_only = load_caffe(PNET)
    weights = random_caffe_weights(shape_only, np.random.default_rng(0))
    proto, model = write_caffe(folder, PNET, weights)
    return proto, model, load_caffe(proto, model)


def test_both_heads_are_outputs(pnet, cv2):
    proto, model, net = pnet
    assert set(net.outputs) == {"prob1", "conv4-2"} and net.output == "prob1"
    assert net.blob_shape("prob1") == (2, 1, 1) and net.blob_shape("conv4-2") == (4, 1, 1)
    x = np.random.default_rng(1).uniform(-1, 1, (3, 3, 12, 12)).astype(np.float32)
    ours = net.forward(x, output=["prob1", "conv4-2"])
    theirs = opencv_outputs(cv2, proto, model, x, ["prob1", "conv4-2"])
    for name in ours:
        assert_close(ours[name], theirs[name], 1e-5, name)
    assert_close(net.forward(x, output="conv4-2"), ours["conv4-2"], 0, "one output by name")


@pytest.mark.parametrize("shape", [(3, 120, 100), (3, 31, 17)])
def test_a_new_input_size_matches_opencv(pnet, cv2, shape):
    """OpenCV runs a fully convolutional net at any input size; so does ``at_input_shape``,
    with the same weights (shared, not copied)."""
    proto, model, net = pnet
    big = net.at_input_shape(shape)
    H, W = (shape[1] - 1) // 2 - 4, (shape[2] - 1) // 2 - 4  # conv 3, pool 2 (ceil), conv 3 ×2
    assert big.blob_shape("prob1") == (2, H, W) and big.blob_shape("conv4-2") == (4, H, W)
    assert big["conv1"].params["bias"] is net["conv1"].params["bias"]  # shared
    x = np.random.default_rng(2).uniform(-1, 1, (2,) + shape).astype(np.float32)
    ours = big.forward(x, output=["prob1", "conv4-2"])
    theirs = opencv_outputs(cv2, proto, model, x, ["prob1", "conv4-2"])
    for name in ours:
        assert ours[name].shape == theirs[name].shape
        assert_close(ours[name], theirs[name], 1e-5, f"{name} at {shape}")
    # the face map is a distribution over axis 1 at every position
    assert_close(ours["prob1"].sum(axis=1), np.ones((2, H, W)), 1e-6, "per-position softmax")


def test_the_size_is_refused_where_a_layer_fixes_it():
    text = (PNET + 'layer { name: "fc" type: "InnerProduct" bottom: "conv3" top: "fc" '
              'inner_product_param { num_output: 3 } }\n')
    net = load_caffe(text)
    with pytest.raises(ValueError, match=r"cannot run at input shape \(3, 20, 20\).*fc "
                                         r"\(InnerProduct\).*fixes the input size"):
        net.at_input_shape((3, 20, 20))
    with pytest.raises(ValueError, match="cannot run at input shape"):
        net.at_input_shape((3, 4, 4))  # too small for the convolutions


@pytest.mark.parametrize("head", ["prob1", "conv4-2"])
def test_each_head_can_be_attacked(pnet, head):
    """The loss and the attacks on any named output: FGSM raises the head's loss, and the input
    gradient of that loss is the finite difference of it (float64)."""
    _, _, net = pnet
    view = net.copy(dtype=np.float64).with_output(head)
    assert view.num_classes == (2 if head == "prob1" else 4)
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (4, 3, 12, 12))
    y = view.predict(x)
    loss, dx = view.loss_and_input_grad(x, y)
    e = np.zeros_like(x)
    e[0, 1, 5, 6] = 1e-6
    numeric = (view.loss_and_input_grad(x + e, y)[0][0]
               - view.loss_and_input_grad(x - e, y)[0][0]) / 2e-6
    assert dx[0, 1, 5, 6] == pytest.approx(numeric, rel=1e-4, abs=1e-9)
    x_adv = fgsm(view, x, y, eps=0.05)
    assert (view.loss_and_input_grad(x_adv, y)[0] > loss).all()
    assert np.abs(x_adv - x).max() <= 0.05 + 1e-12
    x_pgd = pgd(view, x, y, eps=0.05, steps=5)  # any attack of the common signature
    assert (view.loss_and_input_grad(x_pgd, y)[0] > loss).all()
    # the view shares the layers: the whole net still computes both heads
    assert net.with_output(head).forward(x.astype(np.float32)).shape[1:] == \
        net.blob_shape(head)
