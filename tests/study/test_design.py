"""The design that separates the causes: the config's match_bytes and stages, the sizes they
build to, and the report's design table, stage ablation and figures (study/report/design.py)
on synthetic rows; and a cut-down copy of examples/design.toml end to end (slow)."""

import copy
import os
import tomllib
from importlib import resources

import pytest

from robustcnn.study.config import parse_config

EXAMPLE = resources.files("robustcnn.study") / "examples" / "design.toml"


def _raw(*models):
    return {"study": {"dataset": "digits"},
            "models": [{"name": "dense", "kind": "dense", "arch": "lenet5"},
                       {"name": "dc", "kind": "compressed", "base": "dense", "preset": "lenet5"},
                       {"name": "small", "kind": "compact", "arch": "mobilenet_small",
                        "params": 20000, "kwargs": {"blocks": 5}},
                       *models],
            "attacks": [{"name": "fgsm", "eps": [0.1]}]}


def _compressed(name="x", **fields):
    return {"name": name, "kind": "compressed", "base": "dense", "preset": "lenet5", **fields}


# -- config ------------------------------------------------------------------------------------

def test_the_example_parses_with_every_arm():
    with EXAMPLE.open("rb") as f:
        study = parse_config(tomllib.load(f), source="design.toml")
    kinds = {m.name: m.kind for m in study.models}
    assert kinds["mobilenet-30k-int8"] == "quantized"
    assert study.model("mobilenet-108k-dc").parents == ["mobilenet-108k", "dc-40x"]
    assert study.model("lenet5-prune-40x").match == "dc-40x"
    assert {m.options.get("stages", None) and tuple(m.options["stages"])
            for m in study.models if m.kind == "compressed"} \
        == {None, ("prune",), ("quantize",), ("prune", "quantize")}
    # Every model is a model of its own: no two share an artifact.
    assert len({study.model_key(m.name, 0) for m in study.models}) == len(study.models)


def test_stages_clear_what_they_leave_out():
    study = parse_config(_raw(_compressed("p", stages=["prune"]),
                              _compressed("q", stages=["quantize"]),
                              _compressed("pq", stages=["quantize", "prune"])))
    full = study.compression(study.model("dc"))
    p, q, pq = (study.compression(study.model(n)) for n in ("p", "q", "pq"))
    assert p["bits"] == {} and p["kept"] == full["kept"] and p["huffman"] is False
    assert q["kept"] == {} and q["bits"] == full["bits"] and q["huffman"] is False
    assert pq["kept"] == full["kept"] and pq["bits"] == full["bits"] and not pq["huffman"]
    assert study.model("pq").options["stages"] == ["prune", "quantize"]  # pipeline order
    from robustcnn.compress.pipeline import STAGES, stages_of

    assert [stages_of(s) for s in (full, p, q, pq)] == [STAGES, ("prune",), ("quantize",),
                                                        ("prune", "quantize")]
    keys = {study.model_key(n, 0) for n in ("dc", "p", "q", "pq")}
    assert len(keys) == 4


def test_match_bytes_is_a_parent_and_part_of_the_identity():
    raw = _raw({"name": "small-dc", "kind": "compressed", "base": "small",
                "match_bytes": "dc"})
    study = parse_config(raw)
    assert study.model("small-dc").parents == ["small", "dc"]
    ident = study.model_identity("small-dc", 0)
    assert ident["match"] == study.model_identity("dc", 0)
    # Another matched model, or the matched model made otherwise, is another model.
    other = copy.deepcopy(raw)
    other["models"][-1]["match_bytes"] = "dense"
    assert parse_config(other).model_key("small-dc", 0) != study.model_key("small-dc", 0)
    other = copy.deepcopy(raw)
    other["models"][1]["settings"] = {"rounds": 1}
    assert parse_config(other).model_key("small-dc", 0) != study.model_key("small-dc", 0)


@pytest.mark.parametrize("model, key, words", [
    (_compressed(stages=["huffman"]), "models[3] (x).stages", "Huffman coding alone"),
    (_compressed(stages=["quantize", "huffman"]), "models[3] (x).stages",
     "give it with prune and quantize"),
    (_compressed(stages=[]), "models[3] (x).stages", "expected a non-empty list"),
    (_compressed(stages="prune"), "models[3] (x).stages", "expected a non-empty list"),
    (_compressed(stages=["prune", "retrain"]), "models[3] (x).stages", "unknown stage 'retrain'"),
    (_compressed(stages=["prune", "prune"]), "models[3] (x).stages", "repeated stage"),
    (_compressed(stages=["quantize"], settings={"kept": {"ip1": 0.1}}),
     "models[3] (x).settings.kept", "stages leave out prune"),
    (_compressed(stages=["prune"], settings={"bits": {"ip1": 4}}),
     "models[3] (x).settings.bits", "stages leave out quantize"),
    (_compressed(stages=["prune", "quantize"], settings={"huffman": True}),
     "models[3] (x).settings.huffman", "stages leave out huffman"),
    (_compressed(stages=["quantize"], target_ratio=10), "models[3] (x).target_ratio",
     "stages must include prune"),
    (_compressed(stages=["quantize"], match_bytes="small"), "models[3] (x).match_bytes",
     "stages must include prune"),
    (_compressed(code_bits=9), "models[3] (x).code_bits", "expected an integer in [1, 8]"),
    (_compressed(code_bits=True), "models[3] (x).code_bits", "expected an integer in [1, 8]"),
    (_compressed(stages=["prune"], code_bits=8), "models[3] (x).code_bits",
     "stages leave out quantize"),
    (_compressed(match_bytes="nothing"), "models[3] (x).match_bytes", "no model named"),
    (_compressed(match_bytes="dense"), "models[3] (x).match_bytes", "the base dense itself"),
    (_compressed(match_bytes="small", target_ratio=10), "models[3] (x).match_bytes",
     "either target_ratio or match_bytes"),
    ({"name": "x", "kind": "compressed", "base": "small"}, "models[3] (x)",
     "code_bits, a target_ratio or match_bytes"),
    ({"name": "x", "kind": "compact", "arch": "lenet5", "match_bytes": "dc"},
     "models[3] (x).match_bytes", "unknown key"),
])
def test_bad_design_options_are_one_clear_line(model, key, words):
    with pytest.raises(ValueError) as e:
        parse_config(_raw(model), source="d.toml")
    message = str(e.value)
    assert message.startswith(f"d.toml: {key}: ") and words in message
    assert "\n" not in message


def test_a_compact_model_is_sized_to_the_matched_file():
    """sized_settings: a net without a preset starts from every layer at 5-bit codes and its
    shares are scaled so that its file, compressed without training, is the matched model's
    size to MATCH_TOLERANCE (the meta of its header counted)."""
    import numpy as np

    from robustcnn.compress.pipeline import CompressionSettings
    from robustcnn.compress.target import trial_file_bytes
    from robustcnn.models.architectures import fresh_net
    from robustcnn.study.build import MATCH_TOLERANCE, file_meta, sized_settings

    study = parse_config(_raw({"name": "small-dc", "kind": "compressed", "base": "small",
                               "match_bytes": "dc"},
                              {"name": "small-p", "kind": "compressed", "base": "small",
                               "match_bytes": "dc", "stages": ["prune"]}))
    x = np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)
    net, _ = fresh_net("mobilenet_small", x, 10, seed=0, params=20000, blocks=5)
    target = 12_000
    for name, quantized in (("small-dc", True), ("small-p", False)):
        extra = {}
        meta = file_meta(study, name, 0)
        settings = sized_settings(study, study.model(name), net, {"dc": target}, extra,
                                  meta=meta)
        assert extra["target_bytes"] == target and extra["kept"] == settings["kept"]
        assert bool(settings["bits"]) == quantized
        assert set(settings["kept"]) == {l.name for l in net.layers
                                         if hasattr(l, "weight_format")}
        size = trial_file_bytes(net, CompressionSettings(**settings), meta=meta)
        assert abs(size - target) <= MATCH_TOLERANCE * target
        assert size in [b for _, b in extra["size_trials"]]
    with pytest.raises(ValueError, match=r"model small-dc: match_bytes dc \(100 bytes"):
        sized_settings(study, study.model("small-dc"), net, {"dc": 100}, {})


def test_code_bits_quantize_every_layer_but_those_settings_name():
    import numpy as np

    from robustcnn.models.architectures import fresh_net
    from robustcnn.study.build import sized_settings

    study = parse_config(_raw({"name": "small-8", "kind": "compressed", "base": "small",
                               "stages": ["quantize"], "code_bits": 8,
                               "settings": {"bits": {"fc": 6}}}))
    assert study.model("small-8").options == {"code_bits": 8, "stages": ["quantize"]}
    x = np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)
    net, _ = fresh_net("mobilenet_small", x, 10, seed=0, params=20000, blocks=5)
    extra = {}
    settings = sized_settings(study, study.model("small-8"), net, {}, extra)
    weighted = [l.name for l in net.layers if hasattr(l, "weight_format")]
    assert settings["bits"] == {**{n: 8 for n in weighted}, "fc": 6} == extra["bits"]
    assert settings["kept"] == {} and settings["huffman"] is False


def test_the_estimate_counts_the_stages_that_run():
    from types import SimpleNamespace

    from robustcnn.study.estimate import build_seconds

    epochs = {"rounds": 2, "retrain_epochs": 3, "finetune_epochs": 5}
    study = parse_config(_raw(_compressed("p", stages=["prune"], settings=epochs),
                              _compressed("q", stages=["quantize"], settings=epochs),
                              _compressed("f", settings=epochs),
                              {"name": "s", "kind": "compressed", "base": "small",
                               "match_bytes": "dc", "settings": epochs}))
    timings = {n: SimpleNamespace(train=1.0, grad=1.0, forward=1.0) for n in "pqfs"}
    # 2 rounds × 3 epochs of retraining after pruning, 5 of centroid fine-tuning, 10 images.
    assert [build_seconds(study, n, 10, timings) for n in "pqfs"] \
        == pytest.approx([60.0, 50.0, 110.0, 110.0])


# -- the report on synthetic rows -------------------------------------------------------------

def _row(model, kind, seed, eps, clean, adv, size, *, weights=100_000, parents=(),
         settings=None, stages=None, adversarial=""):
    info = {"params": weights + 100, "weights": weights, "nonzero_weights": weights,
            "dense_bytes": 4 * (weights + 100), "file_bytes": size,
            "compression_ratio": 4 * (weights + 100) / size, "parents": list(parents),
            "adversarial": adversarial}
    if stages is not None:
        info["compression_stages"] = list(stages)
    return {"key": f"{model}-{seed}-{eps}", "study": "d", "model": model, "kind": kind,
            "arch": "a", "attack": "fgsm", "norm": "linf", "eps": eps, "seed": seed,
            "examples": 100, "clean_accuracy": clean, "adversarial_accuracy": adv,
            "success_rate": 0.0, "linf_mean": eps, "l2_mean": 1.0, "sanity_passed": True,
            "sanity": [], "model_info": info, "settings": settings or {}, "seconds": 1.0,
            "versions": {"robustcnn": "0", "numpy": "1", "numba": "2", "python": "3"}}


FULL = ("prune", "quantize", "huffman")
# (model, kind, file bytes, weights, parents, stages or settings, clean, robust per seed)
ARMS = [("dense", "dense", 400_000, 100_000, (), None, 0.95, (0.30, 0.34)),
        ("dc", "compressed", 10_000, 100_000, ("dense",), FULL, 0.94, (0.40, 0.44)),
        ("prune-only", "compressed", 11_000, 100_000, ("dense", "dc"), ("prune",), 0.93,
         (0.35, 0.37)),
        ("quant-only", "compressed", 61_000, 100_000, ("dense",), ("quantize",), 0.95,
         (0.31, 0.33)),
        ("compact", "compact", 10_400, 2_500, (), None, 0.90, (0.20, 0.24)),
        ("big", "compact", 100_000, 25_000, (), None, 0.93, (0.25, 0.27)),
        ("big-dc", "compressed", 9_000, 25_000, ("big", "dc"), FULL, 0.92, (0.26, 0.30)),
        ("big-int8", "quantized", 12_000, 10_000, ("mid",), None, 0.91, (0.22, 0.26)),
        ("mid", "compact", 40_000, 10_000, (), None, 0.92, (0.23, 0.27))]


def _rows(seeds=(0, 1)):
    rows = []
    for model, kind, size, weights, parents, stages, clean, robust in ARMS:
        settings = {"options": {"method": "int8"}} if kind == "quantized" else {}
        for seed in seeds:
            rows.append(_row(model, kind, seed, 0.1, clean, robust[seed], size, weights=weights,
                             parents=parents, stages=stages if kind == "compressed" else None,
                             settings=settings))
    return rows


def test_methods_arms_and_groups_by_bytes():
    from robustcnn.study.report.design import (arm, byte_groups, method, reference_dense,
                                               size_reduction)
    from robustcnn.study.report.tables import summarise

    models, _ = summarise(_rows())
    assert {n: arm(models, n) for n in models} == {
        "dense": "", "dc": "(a)", "prune-only": "(e)", "quant-only": "(e)", "compact": "(b)",
        "big": "(b)", "big-dc": "(c)", "big-int8": "(d)", "mid": "(b)"}
    models["factorised"] = {**models["compact"], "kind": "lowrank"}
    models["student"] = {**models["compact"], "kind": "distilled"}
    assert (arm(models, "factorised"), arm(models, "student")) == ("", "(b)")
    del models["factorised"], models["student"]
    assert method(models, "dc") == "dense: Deep Compression"
    assert method(models, "prune-only") == "dense: prune only"
    assert method(models, "big-dc") == "compact: Deep Compression"
    assert method(models, "big-int8") == "compact: int8"
    assert method(models, "compact") == "compact"
    eight = {**models["big-dc"], "info": {**models["big-dc"]["info"], "bits": {"a": 8, "b": 8},
                                          "compression_stages": ["quantize"]}}
    models["eight"] = eight
    assert (arm(models, "eight"), method(models, "eight")) == ("(d)",
                                                               "compact: quantize only (8-bit)")
    models["eight"] = {**eight, "info": {**eight["info"], "bits": {"a": 8, "b": 6}}}
    assert (arm(models, "eight"), method(models, "eight")) == ("(c)", "compact: quantize only")
    del models["eight"]
    # dc (arm (a), 10,000 bytes) heads 9,000 .. 12,000 bytes; 40,000 and 61,000 are not within
    # 1.5x of each other.
    assert byte_groups(models) == [("dc", ["big-dc", "dc", "compact", "prune-only", "big-int8"]),
                                   (None, ["mid"]), (None, ["quant-only"]), (None, ["big"]),
                                   (None, ["dense"])]
    assert reference_dense(models) == "dense"
    assert size_reduction(models, "compact", "dense") == pytest.approx(400_000 / 10_400)


def test_design_and_ablation_tables_follow_the_rows():
    from robustcnn.study.report import markdown

    md = markdown(_rows())
    design = md.split("## Design: arms at the same bytes")[1].split("\n## ")[0]
    lines = {line.split(" | ")[1]: line for line in design.splitlines()
             if line.startswith("| 1: dc's |")}
    assert list(lines) == ["big-dc", "dc", "compact", "prune-only", "big-int8"]
    # dc: 10,000 bytes over 100,000 weights is 0.8 bits per weight; robust 42% over the two
    # seeds (40 and 44), its t-interval 42 ± 12.706 · 2.828/√2 = 42 ± 25.41 pp.
    assert "| (a) | dense: Deep Compression | dense | 10,000 | 100,000 | 100,000 | 0.8 |" \
        in lines["dc"]
    assert "| 42.00 [16.59, 67.41] |" in lines["dc"]
    assert "| compact: int8 | mid | 12,000 | 10,000 | 10,000 | 9.6 |" in lines["big-int8"]
    assert "Spearman's rank correlation" in design
    ablation = md.split("## Stage ablation")[1].split("\n## ")[0]
    rows = [line.split(" | ")[:2] for line in ablation.splitlines() if line.startswith("| ")
            and not line.startswith("| model") and "---" not in line]
    assert rows == [["| dense", "none (the base)"], ["| prune-only", "prune only"],
                    ["| quant-only", "quantize only"], ["| dc", "Deep Compression"]]
    # Without a stage-only arm there is no ablation section.
    full_only = [r for r in _rows() if r["model"] not in ("prune-only", "quant-only")]
    assert "## Stage ablation" not in markdown(full_only)


def test_one_seed_uses_the_bootstrap_and_the_figures_are_drawn(tmp_path):
    pytest.importorskip("matplotlib")
    from robustcnn.study.report import FIGURES, write_figures

    rows = _rows(seeds=(0,))
    paths = write_figures(rows, str(tmp_path))
    assert [os.path.basename(p) for p in paths] == list(FIGURES)
    for p in paths:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


# -- end to end --------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_cut_down_design_runs_end_to_end(tmp_path):
    """examples/design.toml with fewer models, one short epoch, 300 training and 40 test
    images, FGSM only: every arm is built, the matched files come within 2% of dc-40x's size, and
    the report holds the design table, the stage ablation and the figures."""
    pytest.importorskip("sklearn")
    from robustcnn.study.report import write_report
    from robustcnn.study.runner import run_study
    from robustcnn.study.store import Store

    with EXAMPLE.open("rb") as f:
        raw = tomllib.load(f)
    raw["study"].update(seeds=[0], train_examples=300, test_examples=40, sanity=False,
                        batch_size=40)
    raw["train"].update(epochs=1)
    keep = {"lenet5", "dc-40x", "lenet5-prune-40x", "lenet5-quantize", "lenet5-prune-quantize",
            "mobilenet-108k", "mobilenet-30k", "mobilenet-11k", "mobilenet-108k-dc",
            "mobilenet-30k-int8", "mobilenet-30k-8bit"}
    raw["models"] = [m for m in raw["models"] if m["name"] in keep]
    for m in raw["models"]:
        if m["kind"] == "compressed":
            m["settings"] = {k: 1 for k in ("rounds", "retrain_epochs", "finetune_epochs")
                             if k in m.get("settings", {})}
    raw["attacks"] = [{"name": "fgsm", "eps": [0.1]}]
    study = parse_config(raw, source="design.toml")
    db = tmp_path / "study.sqlite"
    done = run_study(study, db, progress=False, log=lambda line: None)
    assert done["remaining"] == 0 and done["written"] == len(keep)
    with Store(db) as store:
        info = {r["model"]: r["model_info"] for r in store.rows()}
    target = info["dc-40x"]["file_bytes"]
    # Measured: 35,546 and 35,128 bytes for dc-40x's 35,235 (+0.9%, −0.3%), each its closest
    # trial's bytes exactly (one round of pruning here, so training moves no byte count).
    for name in ("lenet5-prune-40x", "mobilenet-108k-dc"):
        assert info[name]["target_bytes"] == target
        assert abs(info[name]["file_bytes"] - target) <= 0.02 * target
    # A CSR file's bytes depend on the counts kept alone: the trial's are the file's.
    assert info["lenet5-prune-40x"]["file_bytes"] in [
        b for _, b in info["lenet5-prune-40x"]["size_trials"]]
    assert info["lenet5-prune-40x"]["compression_stages"] == ["prune"]
    assert set(info["mobilenet-30k-8bit"]["bits"].values()) == {8}
    assert info["mobilenet-30k-8bit"]["compression_stages"] == ["quantize"]
    assert info["lenet5-quantize"]["nonzero_weights"] == info["lenet5"]["weights"]
    assert info["dc-40x"]["nonzero_weights"] < info["dc-40x"]["weights"] / 10
    paths = write_report(str(db), str(tmp_path / "report"))
    md = open(paths[1]).read()
    assert "## Design: arms at the same bytes" in md and "## Stage ablation" in md
    design = md.split("## Design: arms at the same bytes")[1].split("\n## ")[0]
    group = [line.split(" | ")[1] for line in design.splitlines()
             if line.startswith("| ") and "dc-40x" in line.split(" | ")[1:2]]
    assert group == ["dc-40x"]
    first = next(line for line in design.splitlines() if "| dc-40x |" in line).split(" | ")[0]
    same = {line.split(" | ")[1] for line in design.splitlines() if line.startswith(first + " |")}
    assert {"dc-40x", "lenet5-prune-40x", "mobilenet-108k-dc", "mobilenet-11k"} <= same


@pytest.mark.slow
def test_a_huffman_coded_match_is_compressed_again_when_retraining_moves_its_size():
    """LeNet-5 trained an epoch on 600 digits, Deep Compression to a 38,000-byte file: the
    retrained survivors' codes Huffman-code less tightly than the untrained trial's, so the
    first file misses the target; a second compression aims off by the drift. Measured on
    this machine: first 39,936 bytes (+5.1%), then 38,201 (+0.5%)."""
    pytest.importorskip("sklearn")
    from robustcnn.compress.modelfile import encode_model
    from robustcnn.study.build import MATCH_RETRY, build_model, file_meta
    from robustcnn.study.data import load_data

    raw = {"study": {"dataset": "digits", "seeds": [0], "train_examples": 600,
                     "test_examples": 40},
           "train": {"epochs": 1, "lr": 0.02},
           "models": [{"name": "dense", "kind": "dense", "arch": "lenet5"},
                      {"name": "small", "kind": "compact", "arch": "lenet5"},
                      {"name": "dc", "kind": "compressed", "base": "dense", "preset": "lenet5",
                       "match_bytes": "small",
                       "settings": {"rounds": 2, "retrain_epochs": 1, "finetune_epochs": 1}}],
           "attacks": [{"name": "fgsm", "eps": [0.1]}]}
    study = parse_config(raw)
    data = load_data(study)
    dense, _ = build_model(study, "dense", 0, data, {})
    target = 38_000
    lines = []
    net, extra = build_model(study, "dc", 0, data, {"dense": dense}, log=lines.append,
                             parent_bytes={"small": target})
    size = len(encode_model(net, file_meta(study, "dc", 0)))
    assert extra["target_bytes"] == target
    assert abs(size - target) <= 0.05 * target
    assert abs(extra["first_bytes"] - target) > MATCH_RETRY * target
    assert len(lines) == 2 and "again aiming at" in lines[1]
