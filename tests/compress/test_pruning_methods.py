"""The pruning methods table (compress/pruning_methods.py): options checked before any work,
every method through the pipeline to a model file the kernels run (the robust-pruning ones on
an adversarial objective), the command line naming every method."""

import argparse

import numpy as np
import pytest

from robustcnn.compress.admm import project
from robustcnn.compress.pruning_methods import (PRUNING_METHODS, options_from_text,
                                                parse_options, pruning_method)
from robustcnn.compress.pipeline import CompressionSettings, compress
from robustcnn.engine import Conv2d, Linear, MaxPool2d, Net, ReLU
from robustcnn.engine.train import Schedule, fit


def tiny_lenet():
    """LeNet's shape in miniature: conv → pool → ReLU → ip → ReLU → ip, on (1, 8, 8)."""
    return Net([Conv2d("conv1", 4, kernel=3), MaxPool2d("pool1", 2, 2), ReLU("relu1"),
                Linear("ip1", 16), ReLU("relu2"), Linear("ip2", 3)], input_shape=(1, 8, 8),
               seed=0, name="tiny-lenet")


def trained_tiny_lenet(x, y, epochs=6):
    """The tiny LeNet trained on (x, y): compression starts from a trained net."""
    net = tiny_lenet()
    fit(net, x, y, epochs=epochs, batch_size=32,
        schedule=Schedule("cosine", 0.1, total=epochs * (len(x) // 32)), progress=False,
        log=None)
    return net


def bars(n=128, seed=0):
    """Images in [0, 1]; class k is a bright bar on rows 2k + 1 and 2k + 2."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.uniform(0.0, 0.3, (n, 1, 8, 8))
    for i, k in enumerate(y):
        x[i, 0, 2 * k + 1:2 * k + 3, 1:7] += 0.5
    return x.astype(np.float32), y


def tiny_settings(**fields):
    return CompressionSettings(**{**dict(kept={"conv1": 0.5, "ip1": 0.25, "ip2": 0.5},
                                         bits={"conv1": 4, "ip1": 4, "ip2": 4}, rounds=1,
                                         retrain_epochs=1, finetune_epochs=1, lr=0.05,
                                         finetune_lr=0.01, batch_size=32, seed=3), **fields})


def test_table_and_option_parsing():
    assert list(PRUNING_METHODS)[0] == "magnitude"
    with pytest.raises(ValueError, match="unknown pruning method 'magic'"):
        pruning_method("magic")
    spec = pruning_method("OBD")
    assert parse_options(spec, {"examples": 64}).examples == 64
    with pytest.raises(ValueError, match="unknown option 'example' of method obd"):
        parse_options(spec, {"example": 64})
    with pytest.raises(ValueError, match="option 'examples' of method obd must be an integer"):
        parse_options(spec, {"examples": 6.5})
    with pytest.raises(ValueError, match="method obd: mode must be one of"):
        parse_options(spec, {"mode": "diagonal"})
    assert options_from_text(spec, "examples=32,mode=sampled") == {"examples": 32,
                                                                   "mode": "sampled"}
    assert options_from_text(spec, '{"examples": 8}') == {"examples": 8}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        options_from_text(spec, "examples")


def test_the_command_line_names_every_method():
    from robustcnn.cli import _parser

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices["compress"]._actions if a.dest == "pruning")
    for name in PRUNING_METHODS:
        assert name in action.help, name


def test_bad_method_settings_fail_before_any_work():
    x, y = bars(64)
    net = tiny_lenet()
    before = net.params["ip1"]["weight"].copy()
    for settings, match in ((dict(pruning="nope"), "unknown pruning method"),
                            (dict(pruning="obd", pruning_options={"examples": 0}),
                             "examples must be")):
        with pytest.raises(ValueError, match=match):
            compress(net, x, y, tiny_settings(**settings), progress=False, log=None)
    np.testing.assert_array_equal(net.params["ip1"]["weight"], before)


@pytest.mark.parametrize("method, options", [("obd", {"examples": 32}),
                                             ("dns", {"c_rate": 0.5, "epochs": 2})])
def test_methods_write_model_files_the_kernels_run(tmp_path, method, options):
    from robustcnn.compress.modelfile import load_model, save_model

    x, y = bars(128)
    net = trained_tiny_lenet(x, y)
    report = compress(net, x, y, tiny_settings(pruning=method, pruning_options=options), val=(x, y),
                      progress=False, log=None)
    stages = [s["stage"] for s in report["stages"]]
    assert stages[0] == "dense" and stages[-3:] == ["quantize", "fine-tune centroids",
                                                    "huffman"]
    assert report["settings"]["pruning"] == method
    kinds = {l.name: l.weight_format.kind for l in net.layers if hasattr(l, "weight_format")}
    assert set(kinds.values()) <= {"sparse_codebook", "huffman"}
    if method == "dns":
        assert 0 < min(report["dns"]["kept"].values()) < 1
    path = tmp_path / "m.rcnn"
    save_model(path, net, {"settings": report["settings"]})
    loaded, meta = load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
    assert report["stages"][-1]["accuracy"] > 0.6


def test_settings_default_to_deep_compression():
    s = CompressionSettings(kept={}, bits={})
    assert s.pruning == "magnitude" and s.pruning_options == {}


@pytest.mark.parametrize("method, options", [
    ("hydra", {"score_epochs": 1}),
    ("admm", {"epochs": 2, "sparsity_type": "column", "rho": 0.01}),
    ("admm", {"epochs": 1, "sparsity_type": "filter"}),
])
def test_robust_pruning_methods_through_the_pipeline(method, options):
    from robustcnn.attacks.adversarial_training import adversarial_objective

    x, y = bars(128)
    net = trained_tiny_lenet(x, y)
    adversarial = {"attack": "pgd", "eps": 0.05, "fraction": 1.0, "steps": 2}
    settings = CompressionSettings(kept={"conv1": 0.5, "ip1": 0.25, "ip2": 0.5},
                                   bits={"conv1": 4, "ip1": 4, "ip2": 4}, retrain_epochs=1,
                                   finetune_epochs=1, lr=0.05, finetune_lr=0.01, batch_size=32,
                                   seed=1, adversarial=adversarial, pruning=method,
                                   pruning_options=options)
    report = compress(net, x, y, settings, val=(x, y), progress=False, log=None,
                      objective=adversarial_objective(adversarial, 1))
    assert method in report
    for name, share in settings.kept.items():
        fmt = net.layer(name).weight_format
        assert fmt.kind in ("sparse_codebook", "huffman")
        # The share counts weights, columns or filters: at most the projection's support.
        support = project(np.ones(fmt.shape), share, options.get("sparsity_type",
                                                                 "irregular"))[1]
        assert fmt.nnz() <= np.count_nonzero(support) < fmt.size
    if options.get("sparsity_type") == "filter":
        rows = net.layer("ip1").dense_weight().reshape(16, -1)
        assert (np.abs(rows).sum(1) > 0).sum() <= 4
