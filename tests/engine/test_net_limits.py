"""Net's size limit (checked layer by layer before anything is allocated) and building without
drawing initial weights (``init=False``), which the file readers use."""

import tracemalloc

import numpy as np
import pytest

from robustcnn.engine import (BatchNorm, Conv2d, Linear, MaxPool2d, Net, PReLU, ReLU, Scale)
from robustcnn.engine.layers import _drawn, _fill


def _layers(out=10):
    return [Conv2d("conv1", 4, kernel=3), BatchNorm("bn"), Scale("scale", bias=True),
            PReLU("prelu"), MaxPool2d("pool", 2, 2), Linear("ip1", out)]


def test_param_values_count_what_setup_allocates():
    net = Net(_layers(), (2, 8, 8))
    for layer in net.layers:
        allocated = sum(v.size for v in {**layer.params, **layer.buffers}.values())
        assert layer.param_values(layer.in_shapes) == allocated, layer.at


def test_a_net_over_the_limit_is_refused_before_it_allocates():
    small = Net(_layers(), (2, 8, 8))
    nbytes = 4 * sum(v.size for v in small.state_dict().values())
    Net(_layers(), (2, 8, 8), max_bytes=nbytes)  # exactly at the limit
    with pytest.raises(ValueError, match=r"ip1 \(InnerProduct\): the net's parameters reach "):
        Net(_layers(), (2, 8, 8), max_bytes=nbytes - 1)
    tracemalloc.start()
    with pytest.raises(ValueError, match=r"ip1 \(InnerProduct\): the net's parameters reach "
                                         r"14,800,000,416 bytes here"):
        Net(_layers(out=10**8), (2, 8, 8), max_bytes=1 << 29)  # 298 GiB of weights declared
    with pytest.raises(ValueError, match=r"an input of \(3, 100000, 100000\) per example"):
        Net(_layers(), (3, 10**5, 10**5), max_bytes=1 << 29)
    with pytest.raises(ValueError, match=r"conv1 \(Convolution\): an output of \(4, 20000, "
                                         r"20000\) per example"):
        Net([Conv2d("conv1", 4, kernel=1, padding=9990)], (1, 20, 20), max_bytes=1 << 29)
    assert tracemalloc.get_traced_memory()[1] < 1 << 20
    tracemalloc.stop()


def test_without_init_no_weights_are_drawn():
    drawn = Net(_layers(), (2, 8, 8), seed=3)
    blank = Net(_layers(), (2, 8, 8), seed=3, init=False)
    assert not np.any(blank["conv1"].params["weight"])
    assert np.any(drawn["conv1"].params["weight"])
    blank.load_state_dict(drawn.state_dict())
    x = np.random.default_rng(0).random((2, 2, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(blank.forward(x), drawn.forward(x))
    again = Net.from_spec(drawn.spec(), init=False, max_bytes=1 << 20)
    assert not np.any(again["ip1"].params["weight"])


@pytest.mark.parametrize("how", ["xavier", "msra", "glorot", "gaussian:0.01"])
def test_chunked_fill_draws_the_same_values_as_one_draw(how, monkeypatch):
    """The fillers draw in chunks (no float64 temporary of the whole weight): the values are
    those of one draw of the whole size, so initial weights did not change."""
    import robustcnn.engine.layers as layers

    monkeypatch.setattr(layers, "_DRAW_CHUNK", 1000)
    shape = (7, 3, 11, 13)  # 3003 values: three chunks and a partial one
    got = _fill(shape, how, 33, 21, np.random.default_rng(5), np.float32)
    rng = np.random.default_rng(5)
    if how in ("xavier", "glorot"):
        bound = np.sqrt(3.0 / 33) if how == "xavier" else np.sqrt(6.0 / 54)
        want = rng.uniform(-bound, bound, size=shape)
    else:
        want = rng.standard_normal(shape) * (np.sqrt(2.0 / 33) if how == "msra" else 0.01)
    np.testing.assert_array_equal(got, want.astype(np.float32))
    assert _drawn((0, 3), np.float32, lambda n: np.zeros(n)).shape == (0, 3)
