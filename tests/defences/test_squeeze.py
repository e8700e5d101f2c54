"""defences/squeeze.py: the squeezers against NumPy/SciPy, the joint detector's score and
threshold, the detection rows, and the adaptive attack that evades it."""

import numpy as np
import pytest
import scipy.ndimage
from helpers import assert_close

from robustcnn.attacks import evaluate, fgsm
from robustcnn.defences.squeeze import (DetectionRecorder, SqueezeDetector, adaptive_attack,
                                        detection_row, squeezed_net, squeezer_layer)
from robustcnn.engine import Concat, Conv2d, Linear, MaxPool2d, Net, ReLU
from robustcnn.engine.train import Schedule, fit


def small_cnn(seed=0):
    return Net([Conv2d("c1", 6, kernel=3), ReLU("r0"), MaxPool2d("p1", 2, 2), Linear("ip1", 24),
                ReLU("r1"), Linear("ip2", 3)], (1, 10, 10), seed=seed)


def blobs(n, seed):
    """Three classes of 10×10 images: a bright square in one of three places, with noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.random((n, 1, 10, 10)) * 0.4
    for i, label in enumerate(y):
        r = 1 + 3 * label
        x[i, 0, r:r + 3, r:r + 3] += 0.6
    return np.clip(x, 0, 1).astype(np.float32), y


@pytest.fixture(scope="module")
def trained():
    from helpers import single_thread
    x, y = blobs(600, 0)
    net = small_cnn()
    with single_thread():
        fit(net, x, y, epochs=5, batch_size=32, schedule=Schedule("cosine", 0.05, total=5 * 18),
            progress=False, log=None)
    return net, x, y


def test_squeezers_match_numpy_and_scipy(rng):
    x = rng.random((3, 2, 7, 7))
    net = Net([Linear("ip", 2)], (2, 7, 7), dtype=np.float64)
    for name, want in (
            ("bit-depth-1", np.floor(x + 0.5)),
            ("bit-depth-3", np.round(x * 7) / 7),
            ("median-2x2", scipy.ndimage.median_filter(x, size=(1, 1, 2, 2), mode="reflect")),
            ("median-3x3", scipy.ndimage.median_filter(x, size=(1, 1, 3, 3), mode="reflect"))):
        layer = squeezer_layer(name, "data")
        layer.setup([x.shape[1:]], x.dtype)
        from robustcnn.engine.layers import Context
        assert_close(layer.forward([x], Context())[0], want, 1e-15, name)
        squeezed = squeezed_net(net, name)
        assert_close(squeezed.forward(x), net.forward(want), 1e-12, f"{name} in front of the net")


def test_squeezer_in_front_of_every_reader_of_the_input():
    # two layers read the input blob by name: both must see the squeezed input
    net = Net([Conv2d("a", 1, kernel=1, bottom="data"), Conv2d("b", 1, kernel=1, bottom="data"),
               Concat("cat", bottom=["a", "b"]), Linear("ip", 2)], (1, 4, 4), dtype=np.float64)
    x = np.random.default_rng(0).random((2, 1, 4, 4))
    squeezed = squeezed_net(net, "bit-depth-1")
    assert_close(squeezed.forward(x), net.forward(np.floor(x + 0.5)), 1e-12, "both branches")
    assert np.array_equal(squeezed.state_dict()["a/weight"], net.state_dict()["a/weight"])


@pytest.mark.parametrize("name", ["bit-depth-0", "median-2x3", "blur-3", "median-10x10"])
def test_bad_squeezer(name):
    with pytest.raises(ValueError, match="squeezer"):
        squeezer_layer(name, "data")


def test_detector_score_threshold_and_rows(trained):
    net, x, y = trained
    det = SqueezeDetector(net)
    p = lambda n, v: np.exp(n.logits(v)) / np.exp(n.logits(v)).sum(1, keepdims=True)
    d = det.distances(x[:20])
    for k, name in enumerate(det.names):
        want = np.abs(p(net, x[:20]) - p(squeezed_net(net, name), x[:20])).sum(axis=1)
        assert_close(d[:, k], want, 1e-4, name, atol=1e-6)  # float32 softmaxes
    with pytest.raises(ValueError, match="fit"):
        det.detect(x)
    tau = det.fit(x, fpr=0.05)
    assert tau == pytest.approx(np.quantile(det.scores(x), 0.95))
    assert det.detect(x).mean() == pytest.approx(0.05, abs=0.01)
    row = detection_row(det, x[:4], np.array([1, 1, 0, 1], bool), np.array([0, 1, 0, 0], bool))
    assert row["successful"] == 2 and row["examples"] == 4


def test_detection_through_evaluate_and_the_adaptive_attack(trained):
    net, x, y = trained
    xt, yt = blobs(120, 1)
    det = SqueezeDetector(net)
    det.fit(x, fpr=0.05)
    recorder = DetectionRecorder(det, xt)
    result = evaluate(net, xt, yt, ["fgsm"], [0.3], sanity=False, on_examples=recorder)
    assert recorder.rows[0]["attack"] == "fgsm" and recorder.rows[0]["eps"] == 0.3
    rate = recorder.rows[0]["detection_rate"]
    fooled = 1 - result["rows"][0]["adversarial_accuracy"]
    assert fooled > 0.3 and rate > 0.5, (fooled, rate)
    assert "fgsm" in recorder.format()
    # through the squeezers with BPDA, every model pushed to one class: examples that fool the
    # net and are not flagged
    adv = adaptive_attack(det, xt, yt, eps=0.3, steps=60)
    assert np.abs(adv - xt).max() <= 0.3 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    success = (net.predict(adv) != yt) & ~det.detect(adv)
    plain = (net.predict(fgsm(net, xt, yt, 0.3)) != yt) & ~det.detect(fgsm(net, xt, yt, 0.3))
    assert success.mean() > plain.mean() + 0.3, (success.mean(), plain.mean())
