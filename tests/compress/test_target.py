"""compress/target.py: the estimated file size against the file save_model writes (untrained
LeNets compressed without retraining: the size hardly depends on training), the filler model
against a random mask, settings_for_ratio's monotonicity and its unreachable ratios."""

import dataclasses

import numpy as np
import pytest

from robustcnn.compress.modelfile import save_model
from robustcnn.compress.pipeline import CompressionSettings, compress, preset
from robustcnn.compress.report import dense_parameter_bytes
from robustcnn.compress.target import (best_gap_bits, estimate_file_bytes, expected_fillers,
                                       settings_for_ratio)
from robustcnn.engine.formats import SparseCodebookWeight
from robustcnn.models.lenet import lenet5, lenet_300_100

FAST = dict(retrain_epochs=0, finetune_epochs=0, rounds=1)


def _real_bytes(make, settings, tmp_path):
    net = make()
    x, y = np.zeros((8,) + net.input_shape, np.float32), np.zeros(8, np.int64)
    compress(net, x, y, dataclasses.replace(settings, **FAST), progress=False, log=None)
    return save_model(tmp_path / "m.rcnn", net)


@pytest.mark.parametrize("make,settings", [
    (lenet5, preset("lenet5")),
    (lenet5, CompressionSettings(kept={"conv2": 0.3, "ip1": 0.02}, bits={"conv1": 6, "ip1": 3},
                                 gap_bits={"ip1": 7})),  # dense codebook, CSR, dense layers
    (lenet_300_100, preset("lenet-300-100")),
    (lenet_300_100, preset("lenet-300-100-paper")),
], ids=["lenet5", "lenet5-mixed", "lenet-300-100", "lenet-300-100-paper"])
def test_estimate_matches_the_file(make, settings, tmp_path):
    est = estimate_file_bytes(make(), settings)
    real = _real_bytes(make, dataclasses.replace(settings, huffman=False), tmp_path)
    assert est == pytest.approx(real, rel=0.02)  # measured: within 0.2%
    # Huffman coding is not modelled: the coded file is smaller, never much larger
    coded = _real_bytes(make, dataclasses.replace(settings, huffman=True), tmp_path)
    assert coded < 1.01 * est


@pytest.mark.parametrize("make", [lenet5, lenet_300_100])
def test_estimate_of_an_uncompressed_net_is_its_file(make, tmp_path):
    # nothing pruned or quantized: every array is dense float32, so the estimate is exact
    net = make()
    meta = {"model": net.name}
    assert estimate_file_bytes(net, CompressionSettings(kept={}, bits={}), meta=meta) == \
        save_model(tmp_path / "m.rcnn", net, meta=meta)


@pytest.mark.parametrize("kept,gap_bits", [(0.07, 5), (0.12, 4), (0.02, 5), (0.5, 2)])
def test_fillers_of_a_random_mask(kept, gap_bits):
    rng = np.random.default_rng(0)
    size = 200_000
    w = np.zeros(size)
    w[rng.choice(size, round(kept * size), replace=False)] = 1.0
    fmt = SparseCodebookWeight.from_dense(w.reshape(400, 500), 2, gap_bits,
                                          centroids=np.array([0.0, 1.0, 2.0, 3.0]))
    assert fmt.fillers() == pytest.approx(expected_fillers(kept, size, gap_bits), rel=0.05,
                                          abs=20)


def test_best_gap_bits():
    # a dense-ish layer wants narrow indices, a sparse one wide indices
    assert best_gap_bits(0.6, 10_000, 5) <= 2
    assert best_gap_bits(0.01, 400_000, 4) == 8
    assert best_gap_bits(0.07, 400_000, 4) in (5, 6)


@pytest.mark.parametrize("make", [lenet5, lenet_300_100])
def test_settings_for_ratio_hits_the_ratio_and_is_monotone(make):
    net = make()
    dense = dense_parameter_bytes(net)
    kept = []
    for ratio in (8, 10, 20, 40, 60):
        s = settings_for_ratio(net, ratio)
        assert dense / estimate_file_bytes(net, s) == pytest.approx(ratio, rel=0.01)
        assert all(0 < k <= 1 for k in s.kept.values())
        assert s.bits == preset(net.name).bits  # only the shares move
        kept.append(s.kept)
    for a, b in zip(kept, kept[1:]):
        assert all(b[k] <= a[k] for k in a) and any(b[k] < a[k] for k in a)
    # the preset's own ratio comes back as (about) the preset's shares
    s = settings_for_ratio(net, dense / estimate_file_bytes(net, preset(net.name)))
    for name, k in preset(net.name).kept.items():
        assert s.kept[name] == pytest.approx(k, rel=0.01)


def test_generic_base_and_explicit_bases():
    from robustcnn.engine import Conv2d, Linear, Net, ReLU

    net = Net([Conv2d("c", 8, kernel=3), ReLU("r"), Linear("fc", 10)], (1, 12, 12), name="x")
    s = settings_for_ratio(net, 8)
    assert set(s.kept) == set(s.bits) == {"c", "fc"} and set(s.bits.values()) == {5}
    assert s.gap_bits == {"c": 4, "fc": 5}
    dense = dense_parameter_bytes(net)
    assert dense / estimate_file_bytes(net, s) == pytest.approx(8, rel=0.01)
    s = settings_for_ratio(lenet5(), 30, base="lenet5-paper")
    assert s.bits == preset("lenet5-paper").bits
    with pytest.raises(ValueError, match="no compression preset"):
        settings_for_ratio(lenet5(), 30, base="vgg")
    with pytest.raises(ValueError, match="does not have"):
        settings_for_ratio(lenet5(), 30, base=preset("lenet-300-100"))


def test_unreachable_ratios():
    net = lenet5()
    with pytest.raises(ValueError, match=r"10000× file is out of reach.*at most 8\d\.\d+×"):
        settings_for_ratio(net, 10_000)
    with pytest.raises(ValueError, match="adapt_gap_bits"):
        settings_for_ratio(net, 90)
    # wider indices where the shares are small lift the bound
    s = settings_for_ratio(net, 90, adapt_gap_bits=True)
    assert dense_parameter_bytes(net) / estimate_file_bytes(net, s) == pytest.approx(90, rel=0.01)
    assert s.gap_bits["ip1"] > 5
    with pytest.raises(ValueError, match=r"at most 2\d\d\.\d×"):
        settings_for_ratio(net, 10_000, adapt_gap_bits=True)
    with pytest.raises(ValueError, match="ratio must be"):
        settings_for_ratio(net, 0.5)
    # quantizing every layer already gives 32/bits×
    with pytest.raises(ValueError, match=r"below what quantization alone gives.*at least 7\.7"):
        settings_for_ratio(net, 5)


def test_trial_bytes_are_the_pipelines_file_when_training_moves_nothing():
    """trial_file_bytes leaves out only what training moves: with learning rates ~0 (1e-30) the
    pipelinepipeline's rounds of pruning keep the one round's weights, k-means sees the same values,
    and the file (meta in its header included) has the trial's bytes, Huffman coding on."""
    from robustcnn.compress.modelfile import encode_model
    from robustcnn.compress.target import trial_file_bytes

    net = lenet5()
    settings = preset("lenet5", rounds=3, retrain_epochs=1, finetune_epochs=1, lr=1e-30,
                      finetune_lr=1e-30, momentum=0.0, weight_decay=0.0, batch_size=8)
    meta = {"model": "m", "identity": {"a": list(range(40))}}
    trial = trial_file_bytes(net, settings, meta=meta)
    assert net.layer("ip1").weight_format.kind == "dense"  # the net is left alone
    rng = np.random.default_rng(0)
    x = rng.random((16,) + net.input_shape, dtype=np.float32)
    compress(net, x, rng.integers(0, 10, 16), settings, progress=False, log=None)
    assert any(l.weight_format.kind == "huffman" for l in net.layers
               if hasattr(l, "weight_format"))
    assert trial == len(encode_model(net, meta))
    assert trial < estimate_file_bytes(lenet5(), settings)  # Huffman coding saves bytes


@pytest.mark.parametrize("target", [25_000, 45_000])
def test_settings_for_bytes_hits_the_file_size(target):
    from robustcnn.compress.target import settings_for_bytes, trial_file_bytes

    net = lenet5()
    settings, trials = settings_for_bytes(net, target, tolerance=0.01)
    size = trial_file_bytes(net, settings)
    assert abs(size - target) <= 0.01 * target
    assert size == min((b for _, b in trials), key=lambda b: abs(b - target))
    assert len(trials) <= 8
    # The estimate alone misses: its file is the first trial's.
    first = trial_file_bytes(net, settings_for_ratio(net, dense_parameter_bytes(net) / target))
    assert trials[0][1] == first
    with pytest.raises(ValueError, match="out of reach"):
        settings_for_bytes(net, 100)
