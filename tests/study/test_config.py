"""study/config.py: a CONFIG.toml → a grid of cells, and clear errors naming the key."""

import copy
from importlib import resources

import pytest
from study_helpers import tiny_config

from robustcnn.study.config import load_config, parse_config


def test_example_config_parses_into_the_documented_grid():
    path = resources.files("robustcnn.study") / "examples" / "small.toml"
    study = load_config(path)
    assert [m.kind for m in study.models] == ["dense", "compressed", "compact"]
    assert study.attacks == {"fgsm": [0.05, 0.1, 0.2], "pgd-linf": [0.05, 0.1, 0.2]}
    assert study.seeds == [0]
    cells = study.cells()
    assert len(cells) == 3 * 2 * 3
    assert len({study.cell_key(c) for c in cells}) == len(cells)
    assert study.compression(study.model("lenet5-dc"))["kept"]["ip1"] == pytest.approx(0.07)


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
    (lambda r: r["attacks"][0].update(name="deepfool"), "attacks[0].name"),
    (lambda r: r["attacks"][1].update(name="pgd-linf", eps=[0.1]) or
     r["attacks"][0].update(name="pgd"), "attacks[1].name"),
    (lambda r: r["attacks"][0].update(eps=[0.1, -0.1]), "attacks[0].eps"),
    (lambda r: r["attacks"][0].update(eps="0.1"), "attacks[0].eps"),
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
