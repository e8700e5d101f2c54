"""Study files are checked when read, naming the file and the key: a compressed model's layer
names against its base's architecture, code bits against the weight formats' widths, the types
of preset names; a file too large or nested too deep is refused."""

import pytest

from robustcnn.study.config import MAX_CONFIG_BYTES, load_config, parse_config


def _config(compressed, base_arch="lenet-300-100", middle=None):
    models = [{"name": "dense", "kind": "dense", "arch": base_arch}]
    base = "dense"
    if middle:
        models.append({"name": "mid", "base": "dense", **middle})
        base = "mid"
    models.append({"name": "dc", "kind": "compressed", "base": base, **compressed})
    return {"study": {"dataset": "mnist"}, "models": models,
            "attacks": [{"name": "fgsm", "eps": [0.1]}]}


@pytest.mark.parametrize("compressed, key, message", [
    ({"settings": {"bits": {"ip1": 12}}}, "settings.bits.ip1", "expected an integer in [1, 8]"),
    ({"settings": {"gap_bits": {"ip1": 9}, "bits": {"ip1": 4}}}, "settings.gap_bits.ip1",
     "expected an integer in [1, 8]"),
    ({"settings": {"kept": {"ip9": 0.5}}}, "settings.kept.ip9",
     "the base model dense has no layer 'ip9' with a weight"),
    ({"settings": {"bits": {"relu1": 4}}}, "settings.bits.relu1", "no layer 'relu1'"),
    ({"preset": "lenet5"}, "preset (lenet5)", "no layer 'conv1'"),
    ({"preset": ["lenet5"]}, "preset", "expected a non-empty string, got ['lenet5']"),
    ({"preset": {"a": 1}}, "preset", "expected a non-empty string"),
])
def test_compressed_model_settings_are_checked_when_read(compressed, key, message):
    with pytest.raises(ValueError, match=f"^s.toml: models\\[1\\] \\(dc\\).{_escape(key)}: "
                                         f".*{_escape(message)}"):
        parse_config(_config(compressed), source="s.toml")


def _escape(text):
    import re

    return re.escape(text)


def test_layer_names_follow_the_lineage():
    parse_config(_config({"preset": "lenet-300-100"}))
    parse_config(_config({"preset": "lenet5"}, base_arch="lenet5"))
    # a factorised layer's first factor is a layer with a weight of the low-rank model
    parse_config(_config({"settings": {"kept": {"ip1_lr1": 0.5}}},
                         middle={"kind": "lowrank", "ranks": {"ip1": 8}}))
    with pytest.raises(ValueError, match="the base model mid has no layer 'conv1'"):
        parse_config(_config({"settings": {"kept": {"conv1": 0.5}}},
                             middle={"kind": "finetuned"}))


def test_large_deep_and_binary_files_are_refused(tmp_path):
    big = tmp_path / "big.toml"
    big.write_text("# x\n" * (MAX_CONFIG_BYTES // 4 + 1))
    with pytest.raises(ValueError, match=f"{big}: .* more than a study file may hold"):
        load_config(big)
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ValueError, match=f"{deep}: not valid TOML"):
        load_config(deep)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"a = \xff\xfe\n")
    with pytest.raises(ValueError, match=f"{binary}: not UTF-8"):
        load_config(binary)
