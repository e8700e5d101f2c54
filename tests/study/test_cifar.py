"""examples/cifar.toml on CIFAR-10's binary format: a synthetic copy of the dataset (a few
random images in the real files' layout) read by the study, every model of the example built
at tiny widths, and (slow) a cut-down copy run end to end — training, Deep Compression with and
without adversarial examples, the compact nets, FGSM, PGD and AutoAttack."""

import tomllib
from importlib import resources

import numpy as np
import pytest

from robustcnn.study.config import parse_config

EXAMPLE = resources.files("robustcnn.study") / "examples" / "cifar.toml"
RECORD = 1 + 3 * 32 * 32  # the label byte, then the red, green and blue 32×32 planes


def write_cifar_binary(root, per_batch=24, test=24, seed=0):
    """CIFAR-10's binary version in miniature: data_batch_1..5.bin and test_batch.bin under
    ``root/cifar-10-batches-bin/``, ``per_batch`` (``test``) records each of a label byte (0–9)
    and 3,072 pixel bytes. The images are noise with a class-dependent brightness, so that a
    net can learn something from them. → the labels written, train then test."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir()
    labels = {}
    for name, n in [(f"data_batch_{i}.bin", per_batch) for i in range(1, 6)] + \
            [("test_batch.bin", test)]:
        y = rng.integers(0, 10, n).astype(np.uint8)
        pixels = rng.integers(0, 128, (n, 3 * 32 * 32)) + 12 * y[:, None]
        records = np.concatenate([y[:, None], pixels.astype(np.uint8)], axis=1)
        assert records.shape == (n, RECORD)
        records.tofile(folder / name)
        labels[name] = y
    return labels


def cut_down(data_dir, *, tiny_params):
    """examples/cifar.toml with every model and attack, one seed, a few images, one short
    epoch, the nets at tiny widths: vgg_small at width 1/8 (fc1 32 units), the compact nets at
    ``tiny_params`` (name → parameters), AutoAttack's and PGD's budgets cut."""
    with EXAMPLE.open("rb") as f:
        raw = tomllib.load(f)
    raw["study"].update(seeds=[0], data_dir=str(data_dir), test_examples=16, sanity=False,
                        batch_size=16)
    raw["train"].update(epochs=1, batch_size=16)
    for m in raw["models"]:
        if m["kind"] == "dense":
            m["kwargs"] = {"width": 0.125}
        if m["kind"] == "compressed":
            m["settings"] = {**m.get("settings", {}), "rounds": 1, "retrain_epochs": 1,
                             "finetune_epochs": 1, "batch_size": 16}
            if "adversarial" in m["settings"]:
                m["settings"]["adversarial"] = {**m["settings"]["adversarial"], "steps": 2}
        if m["kind"] == "compact":
            m["params"] = tiny_params[m["name"]]
    for a in raw["attacks"]:
        a["options"] = {"autoattack-linf": {"n_iter": 3, "n_queries": 20},
                        "pgd": {"steps": 3}}.get(a["name"], {})
        if "examples" in a:
            a["examples"] = 8
    return parse_config(raw, source="cifar.toml")


def tiny_budgets():
    """The compact nets' counts for the cut-down copy: a fifth and an eighth of the tiny
    vgg_small's (the example's are a tenth and a fortieth of the full one's, 219,771 and
    54,943; a fortieth of the tiny one is below where the widths' integer steps stay within
    8%)."""
    from robustcnn.models.zoo import vgg_small

    dense = vgg_small(0.125).num_params()
    return {"resnet-220k": dense // 5, "mobilenet-220k": dense // 5,
            "resnet-55k": dense // 8, "mobilenet-55k": dense // 8}


def test_the_example_names_the_full_sizes():
    """The compact nets' counts are the dense vgg_small's float32 bytes over 10 and 40 — the
    files dc-10x and dc-40x are estimated at — in float32 parameters."""
    from robustcnn.compress.report import dense_parameter_bytes
    from robustcnn.models.zoo import vgg_small

    with EXAMPLE.open("rb") as f:
        study = parse_config(tomllib.load(f), source="cifar.toml")
    dense = dense_parameter_bytes(vgg_small())
    params = {m.name: m.options["params"] for m in study.models if m.kind == "compact"}
    assert params == {"resnet-220k": round(dense / 40), "resnet-55k": round(dense / 160),
                      "mobilenet-220k": round(dense / 40), "mobilenet-55k": round(dense / 160)}
    eps = {a.name: a.eps for a in study.attacks.values()}
    assert all(e == pytest.approx((2 / 255, 8 / 255), rel=1e-12) for e in eps.values())
    aware = study.compression(study.model("dc-40x-aware"))["adversarial"]
    assert aware["eps"] == pytest.approx(8 / 255) and aware["attack"] == "pgd-linf"


def test_the_cut_down_example_reads_cifar_binaries_and_builds_every_model(tmp_path):
    """The fast variant: the synthetic binaries as the study loads them, and each trained
    model's architecture built (and sized) for them, without training."""
    from robustcnn.study.build import architecture
    from robustcnn.study.data import load_data

    labels = write_cifar_binary(tmp_path)
    study = cut_down(tmp_path, tiny_params=tiny_budgets())
    x, y, xt, yt = load_data(study)
    assert x.shape == (120, 3, 32, 32) and x.dtype == np.float32 and xt.shape == (16, 3, 32, 32)
    assert 0 <= x.min() and x.max() <= 1
    np.testing.assert_array_equal(y[:24], labels["data_batch_1.bin"])
    np.testing.assert_array_equal(yt, labels["test_batch.bin"][:16])
    for spec in study.models:
        if spec.kind in ("dense", "compact"):
            net, _ = architecture(study, spec, 0, x)
            assert net.input_shape == (3, 32, 32) and net.num_classes == 10
            if spec.kind == "compact":
                assert net.num_params() == pytest.approx(spec.options["params"], rel=0.08)
    assert len(study.cells()) == 8 * 3 * 2


@pytest.mark.slow
def test_a_cut_down_cifar_example_runs_end_to_end(tmp_path):
    """Every model of the example trained, compressed or sized, and attacked by FGSM, PGD and
    AutoAttack on the synthetic binaries: every cell written, the compressed files smaller than
    the dense model's by about what they ask for, the report written."""
    from robustcnn.study.report import write_report
    from robustcnn.study.runner import run_study
    from robustcnn.study.store import Store

    write_cifar_binary(tmp_path)
    study = cut_down(tmp_path, tiny_params=tiny_budgets())
    db = tmp_path / "study.sqlite"
    done = run_study(study, db, progress=False, log=lambda line: None)
    cells = len(study.cells())
    assert done["remaining"] == 0 and done["written"] == cells == 48
    with Store(db) as store:
        rows = store.rows()
    info = {r["model"]: r["model_info"] for r in rows}
    assert set(info) == {m.name for m in study.models}
    for name, least in (("dc-10x", 5), ("dc-40x", 15), ("dc-40x-aware", 15)):
        assert info[name]["compression_ratio"] > least, name
    assert {r["attack"] for r in rows} == {"fgsm", "pgd-linf", "autoattack-linf"}
    assert all(0 <= r["adversarial_accuracy"] <= 1 and 0 <= r["clean_accuracy"] <= 1
               for r in rows)
    # AutoAttack keeps the per-image worst case, the clean image included (a single FGSM step
    # can instead move a misclassified image to its class)
    assert all(r["adversarial_accuracy"] <= r["clean_accuracy"] for r in rows
               if r["attack"] == "autoattack-linf")
    paths = write_report(str(db), str(tmp_path / "report"))
    assert "dc-40x-aware" in open(paths[1]).read()
