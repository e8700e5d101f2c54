"""The pipeline's presets: complete settings for the models they are named after."""

import pytest

from robustcnn.compress.pipeline import PRESETS, CompressionSettings, preset
from robustcnn.models.lenet import build_model


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_name_the_layers_of_their_model(name):
    settings = preset(name)
    net = build_model(name.removesuffix("-paper"))
    weighted = {layer.name for layer in net.layers if hasattr(layer, "weight_format")}
    assert set(settings.kept) == set(settings.bits) == set(settings.gap_bits) == weighted
    assert all(0 < k < 1 for k in settings.kept.values())
    assert all(1 <= b <= 8 for b in settings.bits.values())


def test_preset_overrides_and_unknown_names():
    assert preset("lenet5", rounds=2).rounds == 2
    assert preset("lenet5-paper").bits["conv2"] == 8  # Deep Compression's Table 3
    with pytest.raises(ValueError, match="no compression preset for 'alexnet'"):
        preset("alexnet")
    assert isinstance(preset("lenet-300-100"), CompressionSettings)
