"""study/config.py: a CONFIG.toml → a grid of cells, and clear errors naming the key."""

import copy
from importlib import resources

import pytest
from study_helpers import tiny_config

from robustcnn.study.config import adversarial_recipe_label, load_config, parse_config


def test_example_configs_parse_into_the_documented_grids():
    folder = resources.files("robustcnn.study") / "examples"
    demo = load_config(folder / "demo.toml")
    assert [m.kind for m in demo.models] == ["dense"] + ["compressed"] * 3 + ["compact"] * 2
    assert {k: a.eps for k, a in demo.attacks.items()} == {"fgsm": (0.02, 0.05, 0.1),
                                                           "pgd-linf": (0.02, 0.05, 0.1)}
    assert demo.seeds == [0]
    cells = demo.cells()
    # 6 models × 2 attacks × 3 eps, and a sanity cell per model
    assert len(cells) == 6 * 2 * 3 + 6
    assert [c.model for c in cells if c.attack == "sanity"] == [m.name for m in demo.models]
    assert len({demo.cell_key(c) for c in cells}) == len(cells)
    assert demo.compression(demo.model("dc-40x"))["kept"]["ip1"] == pytest.approx(0.07)
    assert demo.adversarial("dc-40x-aware") == "compressed"

    paper = load_config(folder / "paper.toml")
    kinds = {m.kind for m in paper.models}
    assert kinds == {"dense", "compressed", "finetuned", "compact", "distilled", "lowrank"}
    assert paper.seeds == [0, 1, 2] and "transfer:fgsm<-lenet5" in paper.attacks
    assert paper.test_examples == 2000 and paper.attacks["autoattack-linf"].examples == 1000
    # The paper's second claim with FGSM and PGD training, and the robust-pruning baselines.
    assert [paper.adversarial(n) for n in ("dc-40x-aware-pgd", "dc-90x-then-adv-pgd",
                                           "adv-pgd-then-dc-90x", "hydra-40x-pgd")] == \
        ["compressed", "finetuned", "dense", "compressed+dense"]
    assert paper.compression(paper.model("admm-40x-pgd"))["pruning"] == "admm"
    assert not paper.attacks["deepfool"].bounded and paper.attacks["deepfool"].eps
    # The models the demo shares with the paper grid are not the same models (shorter
    # training): their keys differ, so neither database reuses the other's.
    assert demo.model_key("lenet5", 0) != paper.model_key("lenet5", 0)


def test_keys_follow_what_determines_the_result(tiny_mnist):
    a = parse_config(tiny_config(tiny_mnist))
    raw = tiny_config(tiny_mnist)
    raw["train"]["epochs"] = 3
    b = parse_config(raw)
    # [train] is every trained model's recipe: the dense one, the model compressed from it
    # and the compact one all change.
    for name in ("dense", "dc", "compact"):
        assert a.model_key(name, 0) != b.model_key(name, 0)
    raw = tiny_config(tiny_mnist)
    raw["models"][1]["settings"]["rounds"] = 2
    c = parse_config(raw)
    assert a.model_key("dense", 0) == c.model_key("dense", 0)
    assert a.model_key("dc", 0) != c.model_key("dc", 0)
    assert a.model_key("dense", 0) != a.model_key("dense", 1)


def _broken(data_dir, edit):
    raw = copy.deepcopy(tiny_config(data_dir))
    edit(raw)
    return raw


@pytest.mark.parametrize("edit, key", [
    (lambda r: r["study"].update(dataset="cifar-1000"), "study.dataset"),
    (lambda r: r["study"].update(seeds=[]), "study.seeds"),
    (lambda r: r["study"].update(seeds=[0, 0]), "study.seeds"),
    (lambda r: r["study"].update(test_examples=0), "study.test_examples"),
    (lambda r: r["attacks"][0].update(examples=0), "attacks[0].examples"),
    (lambda r: r["attacks"][1].update(examples=33), "attacks[1].examples"),  # of 32
    (lambda r: r["study"].update(colour="red"), "study.colour"),
    (lambda r: r["train"].update(epochs=-1), "train.epochs"),
    (lambda r: r["train"].update(schedule="linear"), "train.schedule"),
    (lambda r: r.update(models=[]), "models"),
    (lambda r: r["models"][0].update(kind="huge"), "models[0] (dense).kind"),
    (lambda r: r["models"][0].update(arch="resnet9000"), "models[0] (dense).arch"),
    (lambda r: r["models"][2].update(kwargs={"seed": 3}), "models[2] (compact).kwargs.seed"),
    (lambda r: r["models"][1].update(base="nowhere"), "models[1] (dc).base"),
    (lambda r: r["models"][1].update(preset="lenet-9"), "models[1] (dc).preset"),
    (lambda r: r["models"][1]["settings"].update(speed=2), "models[1] (dc).settings.speed"),
    (lambda r: r["models"].append(dict(r["models"][0])), "models[3] (dense).name"),
    (lambda r: r["models"].insert(0, dict(r["models"][1])), "models[0] (dc).base"),
    (lambda r: r["models"][1]["settings"].update(kept={"ip1": 1.5}),
     "models[1] (dc).settings.kept.ip1"),
    (lambda r: r["models"][1]["settings"].update(bits={"ip1": 4.5}),
     "models[1] (dc).settings.bits.ip1"),
    (lambda r: r["attacks"][0].update(name="laser"), "attacks[0].name"),
    (lambda r: r["attacks"][0].update(name="deepfool", source="dense"), "attacks[0].source"),
    (lambda r: r["attacks"][0].update(source="elsewhere"), "attacks[0].source"),
    (lambda r: r["attacks"][0].update(options={"eps": 1}), "attacks[0].options.eps"),
    (lambda r: r["attacks"][0].update(eps=[]), "attacks[0].eps"),
    (lambda r: r["train"].update(adversarial={"attack": "deepfool", "eps": 0.1}),
     "train.adversarial.attack"),
    (lambda r: r["train"].update(adversarial={"attack": "fgsm"}), "train.adversarial.eps"),
    (lambda r: r["train"].update(adversarial={"eps": 0.1, "fraction": 2}),
     "train.adversarial.fraction"),
    (lambda r: r["train"].update(adversarial={"eps": 0.1, "speed": 2}),
     "train.adversarial.speed"),
    (lambda r: r["models"][1]["settings"].update(adversarial={"eps": -1}),
     "models[1] (dc).settings.adversarial.eps"),
    (lambda r: r["train"].update(adversarial={"objective": "free", "eps": 0.1}),
     "train.adversarial.objective"),
    (lambda r: r["train"].update(adversarial={"objective": "trades", "eps": 0.1,
                                              "attack": "pgd"}), "train.adversarial.attack"),
    (lambda r: r["train"].update(adversarial={"objective": "trades"}), "train.adversarial.eps"),
    (lambda r: r["train"].update(adversarial={"objective": "trades", "eps": 0.1, "beta": -6}),
     "train.adversarial.beta"),
    (lambda r: r["models"][1].update(target_ratio=0.5), "models[1] (dc).target_ratio"),
    (lambda r: r["models"][1]["settings"].update(pruning="lottery"),
     "models[1] (dc).settings.pruning"),
    (lambda r: r["models"][1]["settings"].update(pruning="dns", pruning_options={"c": 1}),
     "models[1] (dc).settings.pruning_options"),
    (lambda r: r["models"].append({"name": "low", "kind": "lowrank", "base": "dense"}),
     "models[3] (low)"),
    (lambda r: r["models"].append({"name": "low", "kind": "lowrank", "base": "dense",
                                   "ranks": {"ip1": 0}}), "models[3] (low).ranks.ip1"),
    (lambda r: r["models"].append({"name": "kd", "kind": "distilled", "arch": "lenet5",
                                   "teacher": "nobody"}), "models[3] (kd).teacher"),
    (lambda r: r["models"].append({"name": "kd", "kind": "distilled", "arch": "lenet5",
                                   "teacher": "dense", "alpha": 1.5}), "models[3] (kd).alpha"),
    (lambda r: r["models"].append({"name": "ft", "kind": "finetuned", "base": "dc",
                                   "preset": "lenet5"}), "models[3] (ft).preset"),
    (lambda r: r["models"][2].update(params=0), "models[2] (compact).params"),
    (lambda r: r["attacks"][1].update(name="pgd-linf", eps=[0.1]) or
     r["attacks"][0].update(name="pgd"), "attacks[1].name"),
    (lambda r: r["attacks"][0].update(eps=[0.1, -0.1]), "attacks[0].eps"),
    (lambda r: r["attacks"][0].update(eps="0.1"), "attacks[0].eps"),
    (lambda r: r["models"].append({"name": "q", "kind": "quantized", "base": "dense",
                                   "method": "zip"}), "models[3] (q).method"),
    (lambda r: r["models"].append({"name": "q", "kind": "quantized", "base": "dense",
                                   "method": "ttq", "options": {"speed": 2}}),
     "models[3] (q).options: method ttq: unknown option 'speed'"),
    (lambda r: r["models"].append({"name": "q", "kind": "quantized", "base": "dense",
                                   "method": "ttq", "options": {"seed": 2}}),
     "models[3] (q).options.seed"),
    (lambda r: r["models"].append({"name": "q", "kind": "quantized", "base": "dense",
                                   "method": "int8", "train": {}}), "models[3] (q).train"),
])
def test_bad_configs_raise_value_errors_naming_the_key(tiny_mnist, edit, key):
    with pytest.raises(ValueError, match="^bad.toml: " + key.replace("[", r"\[")
                       .replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        parse_config(_broken(tiny_mnist, edit), source="bad.toml")


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[study\nname = 1\n")
    with pytest.raises(ValueError, match="broken.toml: not valid TOML"):
        load_config(path)


def test_every_kind_and_attack_form_makes_cells_and_keys(tiny_mnist):
    raw = tiny_config(tiny_mnist, sanity=True)
    raw["models"] += [
        {"name": "adv", "kind": "dense", "arch": "lenet-300-100",
         "train": {"adversarial": {"attack": "pgd", "eps": 0.1, "steps": 3}}},
        {"name": "dc-aware", "kind": "compressed", "base": "dense", "preset": "lenet-300-100",
         "settings": {"adversarial": {"eps": 0.1}}},
        {"name": "dc-90", "kind": "compressed", "base": "adv", "preset": "lenet-300-100",
         "target_ratio": 90},
        {"name": "dc-then-adv", "kind": "finetuned", "base": "dc",
         "train": {"epochs": 1, "adversarial": {"eps": 0.1, "fraction": 1.0}}},
        {"name": "kd", "kind": "distilled", "arch": "lenet5", "teacher": "dense",
         "params": 5000},
        {"name": "low", "kind": "lowrank", "base": "dense", "ratio": 10},
        {"name": "trades", "kind": "dense", "arch": "lenet-300-100",
         "train": {"adversarial": {"objective": "trades", "eps": 0.1, "steps": 3}}},
        {"name": "q8", "kind": "quantized", "base": "dense", "method": "int8",
         "options": {"calibration": 64}},
        {"name": "ttq", "kind": "quantized", "base": "dc", "method": "ttq"},
        {"name": "inq", "kind": "quantized", "base": "dense", "method": "inq",
         "options": {"bits": 4, "epochs": 1}},
        {"name": "bnn", "kind": "quantized", "base": "dense", "method": "binary",
         "options": {"activation_bits": 1, "epochs": 1}},
    ]
    raw["attacks"] += [{"name": "deepfool", "eps": [0.5, 1.0], "options": {"max_iter": 5}},
                       {"name": "cw"},
                       {"name": "fgsm", "eps": [0.1], "source": "dense"}]
    study = parse_config(raw, source="all.toml")
    assert study.model("adv").train["adversarial"] == {"attack": "pgd-linf", "eps": 0.1,
                                                       "fraction": 0.5, "steps": 3}
    assert study.model("trades").train["adversarial"] == {"objective": "trades", "eps": 0.1,
                                                          "beta": 6.0, "steps": 3}
    assert study.adversarial("trades") == "dense"
    assert study.model("kd").parents == ["dense"] and study.model("kd").teacher == "dense"
    assert study.arch("dc-then-adv") == "lenet-300-100"
    assert study.model("q8").options == {"method": "int8", "method_options": {"calibration": 64}}
    assert study.model("ttq").parents == ["dc"]
    assert study.model("inq").options == {"method": "inq", "method_options": {"bits": 4,
                                                                             "epochs": 1}}
    assert study.model("bnn").options == {"method": "binary", "method_options": {
        "activation_bits": 1, "epochs": 1}}
    assert [study.adversarial(n) for n in ("dense", "dc", "adv", "dc-aware", "dc-90",
                                           "dc-then-adv", "kd")] == \
        ["", "", "dense", "compressed", "dense", "finetuned", ""]
    # The recipe nearest along the lineage, in the words the report prints.
    assert [adversarial_recipe_label(study.adversarial_recipe(n))
            for n in ("dense", "adv", "dc-aware", "dc-90", "dc-then-adv", "trades")] == \
        ["", "pgd-linf-3 ε=0.1, 50% of each batch", "fgsm ε=0.1, 50% of each batch",
         "pgd-linf-3 ε=0.1, 50% of each batch", "fgsm ε=0.1, 100% of each batch",
         "trades-3 ε=0.1 β=6"]
    assert study.attacks["deepfool"].eps == (0.5, 1.0) and not study.attacks["cw-l2"].eps
    transfer = "transfer:fgsm<-dense"
    assert study.attacks[transfer].source == "dense"
    cells = study.cells()
    assert not [c for c in cells if c.attack == transfer and c.model == "dense"]
    assert {c.eps for c in cells if c.attack in ("deepfool", "cw-l2", "sanity")} == {None}
    first = next(c for c in cells if c.attack == transfer)
    assert study.cell_models(first) == [first.model, "dense"]
    keys = [study.cell_key(c) for c in cells]
    assert len(set(keys)) == len(keys)
    # A model's key follows its parents: retraining the teacher changes the student.
    raw["models"][0]["train"] = {"epochs": 1}
    other = parse_config(raw, source="all.toml")
    for name in ("dense", "dc", "dc-aware", "dc-then-adv", "kd", "low", "q8", "ttq"):
        assert study.model_key(name, 0) != other.model_key(name, 0), name
    for name in ("adv", "dc-90", "compact"):
        assert study.model_key(name, 0) == other.model_key(name, 0), name
    # ... and a transfer cell's key follows its source.
    cell = next(c for c in cells if c.attack == transfer)
    assert study.cell_key(cell) != other.cell_key(cell)
    # An attack's own image count is part of its cells' keys (absent, the keys stay).
    raw["attacks"][0]["examples"] = 16
    fewer = parse_config(raw, source="all.toml")
    assert fewer.attacks["fgsm"].examples == 16 and fewer.attacks["pgd-linf"].examples is None
    for c in cells:
        assert (fewer.cell_key(c) != other.cell_key(c)) == (c.attack == "fgsm"), c


def test_attack_labels_are_built_and_parsed_in_one_place():
    from robustcnn.study.config import (AttackSpec, Cell, attack_label, base_attack,
                                        is_unbounded_attack, parse_attack_label)

    assert attack_label("fgsm") == "fgsm"
    assert attack_label("fgsm", "lenet5") == "transfer:fgsm<-lenet5"
    assert AttackSpec("pgd", "linf", (0.1,), True, "dense").label == "transfer:pgd<-dense"
    assert parse_attack_label("transfer:fgsm<-lenet5") == ("fgsm", "lenet5")
    assert parse_attack_label("transfer:FGSM<-net:v2") == ("fgsm", "net:v2")
    assert parse_attack_label("DeepFool") == ("deepfool", None)
    assert base_attack(attack_label("bim", "dense")) == "bim"
    assert is_unbounded_attack("deepfool") and is_unbounded_attack("cw")
    assert not is_unbounded_attack("transfer:fgsm<-dense") and not is_unbounded_attack("pgd")
    assert Cell("dc", "fgsm", 0.1, 2).describe() == "dc fgsm eps 0.1 seed 2"
    assert Cell("dc", "sanity", None, 0).describe() == "dc sanity seed 0"


def test_digits_example_config_and_its_data():
    pytest.importorskip("sklearn")
    from robustcnn.study.data import load_data

    study = load_config(resources.files("robustcnn.study") / "examples" / "digits.toml")
    assert study.dataset == "digits" and study.data_dir is None
    assert [m.kind for m in study.models] == ["dense"] + ["compressed"] * 2 + ["compact"]
    assert len(study.cells()) == 4 * 2 * 3 + 4
    x, y, xt, yt = load_data(study)
    assert x.shape == (1198, 1, 28, 28) and xt.shape == (200, 1, 28, 28)
    study.test_examples = None
    assert load_data(study)[2].shape == (599, 1, 28, 28)
    # The digits are another dataset: a model of the same recipe is another model.
    raw = {"study": {"dataset": "digits"}, "models": [{"name": "d", "kind": "dense",
                                                       "arch": "lenet5"}],
           "attacks": [{"name": "fgsm", "eps": [0.1]}]}
    other = copy.deepcopy(raw)
    other["study"]["dataset"] = "fashion-mnist"
    assert parse_config(raw).model_key("d", 0) != parse_config(other).model_key("d", 0)


def test_cifar_example_config_parses_into_its_grid():
    """examples/cifar.toml (not run here: no CIFAR-10; a cut-down copy runs on synthetic
    binaries in test_cifar.py): vgg_small, Deep Compression at 10x and 40x (and adversarial-aware
    at 40x), the compact ResNet and MobileNet nets, three L-inf attacks at 2/255 and 8/255."""
    study = load_config(resources.files("robustcnn.study") / "examples" / "cifar.toml")
    assert study.dataset == "cifar-10" and study.data_dir is None and study.seeds == [0, 1, 2]
    assert {m.name: (m.kind, m.arch) for m in study.models if m.arch} == {
        "vgg": ("dense", "vgg_small"), "resnet-220k": ("compact", "resnet_small"),
        "resnet-55k": ("compact", "resnet_small"), "mobilenet-220k": ("compact", "mobilenet_small"),
        "mobilenet-55k": ("compact", "mobilenet_small")}
    assert study.model("dc-10x").options["target_ratio"] == 10
    assert study.compression(study.model("dc-40x"))["kept"]["fc1"] == pytest.approx(0.015)
    assert study.adversarial("dc-40x-aware") == "compressed"
    assert set(study.attacks) == {"fgsm", "pgd-linf", "autoattack-linf"}
    assert study.attacks["autoattack-linf"].examples == 1000 and study.test_examples == 2000
    # 8 models × 3 attacks × 2 eps, and a sanity cell per model, per seed
    assert len(study.cells()) == 3 * (8 * 3 * 2 + 8)
