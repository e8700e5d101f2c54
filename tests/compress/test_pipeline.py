"""The pipeline: presets complete for the models they are named after, and adversarial-aware
compression (adversarial retraining inside the pipeline)."""

import numpy as np
import pytest

from robustcnn.compress.pipeline import PRESETS, CompressionSettings, compress, preset
from robustcnn.models.lenet import build_model


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_name_the_layers_of_their_model(name):
    from robustcnn.models.zoo import ZOO

    settings = preset(name)
    net = ZOO[name]() if name in ZOO else build_model(name.removesuffix("-paper"))
    weighted = {layer.name for layer in net.layers if hasattr(layer, "weight_format")}
    assert set(settings.kept) == set(settings.bits) == set(settings.gap_bits) == weighted
    assert all(0 < k < 1 for k in settings.kept.values())
    assert all(1 <= b <= 8 for b in settings.bits.values())


def test_vgg_small_preset_is_han_et_al_vgg16_shares_scaled_to_40x():
    """The shares of Deep Compression's VGG-16 (Table 5) times one factor, about 0.37, and an
    estimated file of 40× (compress/target.py, before Huffman coding)."""
    from robustcnn.compress.report import dense_parameter_bytes
    from robustcnn.compress.target import estimate_file_bytes
    from robustcnn.models.zoo import vgg_small

    vgg16 = {"conv1_1": 0.58, "conv1_2": 0.22, "conv2_1": 0.34, "conv2_2": 0.36,
             "conv3_1": 0.53, "conv3_2": 0.24, "fc1": 0.04, "fc2": 0.23}
    settings = preset("vgg_small")
    factors = [settings.kept[k] / v for k, v in vgg16.items()]
    assert max(factors) / min(factors) < 1.1 and 0.33 < np.mean(factors) < 0.41
    net = vgg_small()
    ratio = dense_parameter_bytes(net) / estimate_file_bytes(net, settings)
    assert 38 < ratio < 42


def test_preset_overrides_and_unknown_names():
    assert preset("lenet5", rounds=2).rounds == 2
    assert preset("lenet5-paper").bits["conv2"] == 8  # Deep Compression's Table 3
    with pytest.raises(ValueError, match="no compression preset for 'alexnet'"):
        preset("alexnet")
    assert isinstance(preset("lenet-300-100"), CompressionSettings)


def tiny_lenet():
    """LeNet's shape in miniature: conv → pool → ReLU → ip → ReLU → ip, on (1, 8, 8)."""
    from robustcnn.engine import Conv2d, Linear, MaxPool2d, Net, ReLU

    return Net([Conv2d("conv1", 4, kernel=3), MaxPool2d("pool1", 2, 2), ReLU("relu1"),
                Linear("ip1", 16), ReLU("relu2"), Linear("ip2", 3)], input_shape=(1, 8, 8),
               seed=0, name="tiny-lenet")


def bars(n=128, seed=0):
    """Images in [0, 1]; class k is a bright bar on rows 2k + 1 and 2k + 2."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.uniform(0.0, 0.3, (n, 1, 8, 8))
    for i, k in enumerate(y):
        x[i, 0, 2 * k + 1:2 * k + 3, 1:7] += 0.5
    return x.astype(np.float32), y


def compress_as_callers_do(net, x, y, settings, **kwargs):
    """What the CLI and the study do: build the objective the settings record, then compress."""
    from robustcnn.attacks.adversarial_training import adversarial_objective

    objective = adversarial_objective(settings.adversarial, settings.seed,
                                      where="compression settings: adversarial")
    return compress(net, x, y, settings, objective=objective, **kwargs)


def tiny_settings(**fields):
    return CompressionSettings(**{**dict(kept={"conv1": 0.5, "ip1": 0.25, "ip2": 0.5},
                                         bits={"conv1": 4, "ip1": 4, "ip2": 4}, rounds=1,
                                         retrain_epochs=1, finetune_epochs=1, lr=0.05,
                                         finetune_lr=0.01, batch_size=32, seed=3), **fields})


def tiny_compress(adversarial, x=None, y=None):
    if x is None:
        x, y = bars()
    net = tiny_lenet()
    report = compress_as_callers_do(net, x, y, tiny_settings(adversarial=adversarial),
                                    val=(x, y), progress=False, log=None)
    return net, report


def test_adversarial_compression_retrains_on_adversarial_examples(monkeypatch):
    from robustcnn.attacks.adversarial_training import AdversarialObjective
    from robustcnn.compress import pipeline

    objectives = []
    real_fit = pipeline.fit
    monkeypatch.setattr(pipeline, "fit", lambda *a, **kw: (objectives.append(kw["objective"]),
                                                           real_fit(*a, **kw))[1])
    plain, _ = tiny_compress(None)
    assert objectives == [None, None]  # the default trains as before
    objectives.clear()
    neutral, _ = tiny_compress({"attack": "fgsm", "eps": 0.1, "fraction": 0.0})
    adversarial, report = tiny_compress({"attack": "pgd", "eps": 0.1, "fraction": 1.0,
                                         "steps": 2})
    # Both the retraining after pruning and the centroid fine-tuning use the objective.
    assert [o.fraction for o in objectives] == [0.0, 0.0, 1.0, 1.0]
    assert objectives[-1] == AdversarialObjective("pgd", eps=0.1, fraction=1.0, steps=2, seed=3)
    assert report["settings"]["adversarial"] == {"attack": "pgd", "eps": 0.1, "fraction": 1.0,
                                                 "steps": 2}
    assert [s["stage"] for s in report["stages"]] == [
        "dense", "prune+retrain 1/1", "quantize", "fine-tune centroids", "huffman"]
    x, _ = bars(8)
    # fraction 0 trains on clean batches only: the same bits as no objective at all …
    np.testing.assert_array_equal(neutral.forward(x), plain.forward(x))
    # … and training on adversarial examples gives other weights.
    assert not np.allclose(adversarial.forward(x), plain.forward(x))


@pytest.mark.parametrize("adversarial,match", [
    ({"attack": "fgsm", "epsilon": 0.1}, "adversarial has unknown key 'epsilon'"),
    ({"seed": 1}, "unknown key 'seed' \\(the seed is the settings' seed\\)"),
    ({"attack": "deepfool"}, "not a bounded attack"),
    ({"fraction": 2.0}, "fraction must be"),
    (["fgsm"], "adversarial must be a dict"),
])
def test_adversarial_settings_are_checked_before_any_work(adversarial, match):
    x, y = bars(64)
    net = tiny_lenet()
    before = net.params["ip1"]["weight"].copy()
    settings = CompressionSettings(kept={"ip1": 0.5}, bits={}, adversarial=adversarial)
    with pytest.raises(ValueError, match=match):
        compress_as_callers_do(net, x, y, settings, progress=False, log=None)
    np.testing.assert_array_equal(net.params["ip1"]["weight"], before)  # nothing was pruned


def test_settings_recording_an_adversarial_objective_need_it():
    x, y = bars(64)
    net = tiny_lenet()
    before = net.params["ip1"]["weight"].copy()
    settings = CompressionSettings(kept={"ip1": 0.5}, bits={},
                                   adversarial={"attack": "fgsm", "eps": 0.1})
    with pytest.raises(ValueError, match="adversarial is .* but no objective was given"):
        compress(net, x, y, settings, progress=False, log=None)
    np.testing.assert_array_equal(net.params["ip1"]["weight"], before)


def test_the_pipeline_trains_with_the_callers_objective():
    """Any ``fit`` objective: called for every retraining and fine-tuning batch, its loss is
    what the steps descend (here cross-entropy on the batch, so the result is the default's)."""
    x, y = bars()
    calls = []

    def objective(net, xb, yb):
        calls.append(len(xb))
        return net.loss_and_grad(xb, yb)

    plain, _ = tiny_compress(None, x, y)
    net = tiny_lenet()
    report = compress(net, x, y, tiny_settings(), objective=objective, val=(x, y),
                      progress=False, log=None)
    assert len(calls) == 2 * (len(x) // 32) and set(calls) == {32}  # retrain + fine-tune epochs
    assert report["settings"]["adversarial"] is None
    np.testing.assert_array_equal(net.forward(x[:8]), plain.forward(x[:8]))


def test_the_pipeline_does_not_import_the_attacks():
    import subprocess
    import sys

    code = ("import sys, robustcnn.compress.pipeline, robustcnn.compress.target; "
            "print(sorted(m for m in sys.modules if m.startswith('robustcnn.attacks')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("coder", ["rans", "cm"])
def test_entropy_stage_stores_the_same_weights(coder):
    from robustcnn.engine.formats import CmCodebookWeight, RansCodebookWeight

    x, y = bars()
    nets = {}
    for name in ("huffman", coder):
        net = tiny_lenet()
        report = compress_as_callers_do(net, x, y, tiny_settings(entropy=name, retrain_epochs=0,
                                                                 finetune_epochs=0),
                                        val=(x, y), progress=False, log=None)
        assert report["stages"][-1]["stage"] == name
        nets[name] = net
    # each layer coded where that is smaller (these tiny layers' rANS tables can outweigh it)
    for n in ("conv1", "ip1", "ip2"):
        fmt = nets[coder][n].weight_format
        assert fmt.kind in (coder, "sparse_codebook")
        sc = fmt.decoded() if fmt.kind == coder else fmt
        coded = {"rans": RansCodebookWeight, "cm": CmCodebookWeight}[coder].from_sparse_codebook(sc)
        assert (fmt.kind == coder) == (coded.stored_bytes() < sc.stored_bytes())
        np.testing.assert_array_equal(nets[coder][n].dense_weight(),
                                      nets["huffman"][n].dense_weight())


@pytest.mark.parametrize("kind", ["rans", "cm"])
def test_the_size_report_gives_a_coded_layers_stream_bits(kind):
    from format_checks import skewed_codebook_weight

    from robustcnn.compress.report import layer_table
    from robustcnn.engine.formats import FORMATS
    from robustcnn.engine.layers import Linear
    from robustcnn.engine.net import Net

    net = Net([Linear("ip", 64)], (257,), seed=0)
    w = skewed_codebook_weight(np.random.default_rng(0), (64, 257), 0.9, skew=0.6)
    fmt = net.layer("ip").set_weight_format(FORMATS[kind].from_dense(w.astype(np.float32), 4, 5))
    row = layer_table(net)[0]
    assert row["format"] == kind and row["P+Q+H"] == fmt.stored_bytes()
    assert row["P+Q"] == fmt.decoded().stored_bytes()
    assert (row["code_bits"], row["gap_bits"]) == (4, 5)
    streams = fmt.stream.nbytes if kind == "cm" else fmt.code_stream.nbytes + fmt.gap_stream.nbytes
    # code and gap bits per entry: together the streams' bits
    assert (row["huffman_code_bits"] + row["huffman_gap_bits"]) * fmt.count == \
        pytest.approx(8 * streams)
    if kind == "rans":  # two streams: each its own
        assert row["huffman_code_bits"] * fmt.count == pytest.approx(8 * fmt.code_stream.nbytes)
    else:  # one joint stream, split by the widths
        assert row["huffman_code_bits"] / row["huffman_gap_bits"] == pytest.approx(4 / 5)


def test_an_unknown_entropy_coder_is_refused():
    x, y = bars()
    with pytest.raises(ValueError, match="unknown entropy coder 'zip'"):
        compress(tiny_lenet(), x, y, tiny_settings(entropy="zip"), progress=False, log=None)


def test_the_command_line_offers_every_entropy_coder():
    import argparse

    from robustcnn.cli import _parser
    from robustcnn.compress.pipeline import ENTROPY_CODERS

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices["compress"]._actions if a.dest == "entropy")
    assert tuple(action.choices) == tuple(ENTROPY_CODERS)
