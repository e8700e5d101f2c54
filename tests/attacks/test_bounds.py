"""Per-channel bounds (issue 15 point 3): every attack of the registry keeps every channel
inside its own range, through the one place the attacks share (``_common.check_clip``)."""

import inspect

import numpy as np
import pytest

from robustcnn.attacks import fgsm
from robustcnn.attacks._common import Bounds, check_clip, check_clip_pair, model_clip
from robustcnn.attacks.registry import SPECS
from robustcnn.engine import Conv2d, Linear, MaxPool2d, Net, ReLU

# Channel ranges of different widths and places (a Caffe BGR-minus-mean input is this, at
# another scale); an image that sits at an end of some channel.
LOW = np.array([-0.4, 0.0, 0.2])
HIGH = np.array([0.6, 0.5, 1.7])
# Cheap settings for whatever an attack takes (attacks added later get them too).
CHEAP = {"steps": 3, "max_iter": 4, "binary_search_steps": 2, "search_steps": 2,
         "restarts": 1, "gamma": 0.05, "candidates": 3, "max_queries": 40, "queries": 40,
         "n_queries": 40, "iterations": 3}


def rgb_net(seed=0):
    net = Net([Conv2d("conv1", 4, kernel=3), ReLU("relu1"), MaxPool2d("pool1", 2, 2),
               Linear("ip1", 8), ReLU("relu2"), Linear("ip2", 3)], input_shape=(3, 6, 6),
              dtype=np.float64, seed=seed)
    for layer in net.params.values():
        layer["bias"][...] = np.random.default_rng(seed).normal(0, 0.1, layer["bias"].shape)
    return net


def images(n=6, seed=0):
    """Images inside [LOW, HIGH] per channel, a third of the values at an end."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(0, 1, (n, 3, 6, 6))
    u[rng.uniform(size=u.shape) < 0.15] = 0.0
    u[rng.uniform(size=u.shape) < 0.15] = 1.0
    return LOW[:, None, None] + u * (HIGH - LOW)[:, None, None]


def cheap(function):
    params = inspect.signature(function).parameters
    return {k: v for k, v in CHEAP.items() if k in params}


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_every_attack_keeps_each_channel_in_its_range(spec):
    net, x = rgb_net(), images()
    eps = 0.3 if spec.bounded else None  # wider than some channels' distance to their ends
    x_adv = spec.attack(net, x, None, eps, clip=(LOW, HIGH), seed=1, **cheap(spec.function))
    assert x_adv.shape == x.shape
    lo, hi = LOW[:, None, None], HIGH[:, None, None]
    tol = 1e-9 * (HIGH - LOW).max()
    assert (x_adv >= lo - tol).all() and (x_adv <= hi + tol).all(), spec.name
    if spec.bounded:
        delta = (x_adv - x).reshape(len(x), -1)
        size = np.abs(delta).max(1) if spec.norm == "linf" else np.sqrt((delta ** 2).sum(1))
        assert (size <= eps * (1 + 1e-6)).all(), spec.name
        assert np.abs(delta).max() > 0, spec.name  # it did attack


@pytest.mark.parametrize("spec", [s for s in SPECS if s.bounded and s.gradients],
                         ids=lambda s: s.name)
def test_bounds_that_differ_per_channel_are_not_a_common_range(spec):
    """A value at the top of a narrow channel stays there, though it is below the top of the
    widest channel: the clip is per channel, not to [min low, max high]."""
    net, x = rgb_net(seed=3), images(seed=3)
    x_adv = spec.attack(net, x, None, 0.5, clip=(LOW, HIGH), seed=0, **cheap(spec.function))
    assert x_adv[:, 1].max() <= HIGH[1] + 1e-12  # channel 1 tops at 0.5, channel 2 at 1.7
    assert x_adv[:, 0].min() >= LOW[0] - 1e-12
    assert x_adv[:, 2].min() >= LOW[2] - 1e-12


def test_caffe_style_mean_subtracted_input():
    """The issue's example: FGSM with eps 2 (pixel levels) on BGR-minus-mean inputs, clipped to
    (−mean, 255 − mean) per channel."""
    mean = np.array([104.0, 117.0, 123.0])
    net = rgb_net()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 3, 6, 6)) - mean[:, None, None]
    x[:, :, 0, 0] = -mean  # black pixels: at the bottom of every channel
    x_adv = fgsm(net, x, None, eps=2, clip=(-mean, 255 - mean))
    assert (x_adv >= -mean[:, None, None]).all() and (x_adv <= 255 - mean[:, None, None]).all()
    assert np.abs(x_adv - x).max() == pytest.approx(2)


def test_bounds_checks_name_the_channel_and_shapes():
    x = images()
    x[0, 2, 0, 0] = HIGH[2] + 0.1
    with pytest.raises(ValueError, match=r"outside clip \(\[-0.4, 0, 0.2\], .*\(channel\(s\) 2\)"):
        check_clip((LOW, HIGH), x, "fgsm")
    with pytest.raises(ValueError, match="fit neither the input's 3 channels"):
        check_clip(([0, 0], [1, 1]), images(), "fgsm")
    with pytest.raises(ValueError, match="clip low must be below high for every value"):
        check_clip_pair((LOW, [1, 0, 2]), "fgsm")
    with pytest.raises(ValueError, match="clip bounds must be finite"):
        check_clip_pair(([0, np.nan, 0], 1), "fgsm")
    bounds = check_clip((LOW, HIGH), images(), "fgsm")
    assert isinstance(bounds, Bounds) and bounds.span == pytest.approx(1.5)
    assert bounds[0].shape == (3, 1, 1)
    lo, hi = bounds.full((3, 6, 6))
    assert lo.shape == hi.shape == (3, 6, 6) and lo[2, 5, 5] == LOW[2]
    assert check_clip_pair((0, 1), "fgsm") == (0.0, 1.0)  # scalars stay scalars


def test_model_clip_reads_the_model_bounds():
    net = rgb_net()
    assert model_clip(net) == (0.0, 1.0)
    net.bounds = (LOW, HIGH)
    lo, hi = model_clip(net)
    assert list(lo) == list(LOW) and list(hi) == list(HIGH)
