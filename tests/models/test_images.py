"""models/images.py and ``robustcnn predict`` (issue 15 point 7): an image file becomes a net's
input as its recorded preprocessing says (resize, centre crop, channels, bounds, mean/std/
order), and a photo goes to its top-5 ImageNet classes on the command line."""

import sys

import numpy as np
import pytest

from robustcnn.cli import main
from robustcnn.engine import Conv2d, Flatten, Linear, Net
from robustcnn.models import images

Image = pytest.importorskip("PIL.Image", reason="Pillow (the images extra) reads image files")

RED, BLUE = (200, 10, 30), (20, 40, 250)


def halves(path, size=(40, 80)):
    """A (height, width) PNG, its left half RED and its right half BLUE."""
    a = np.empty(size + (3,), np.uint8)
    a[:, :size[1] // 2], a[:, size[1] // 2:] = RED, BLUE
    Image.fromarray(a).save(path)
    return path


def rgb_net(shape=(3, 20, 20)):
    return Net([Flatten("flat"), Linear("ip", 4)], input_shape=shape, seed=0)


def test_resize_shorter_side_centre_crop_bounds_and_channel_order(tmp_path):
    net = rgb_net()
    net.bounds = (0, 255)
    net.preprocessing = {"resize": 20, "crop": 20, "channel_order": "bgr", "mean": [1, 2, 3]}
    x = images.read_images([halves(tmp_path / "h.png")], net)
    # 40×80 → shorter side 20: 20×40; the centred 20×20 keeps columns 10..29: red, then blue.
    assert x.shape == (1, 3, 20, 20) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 5, :8], np.broadcast_to(np.array(RED, float)[:, None],
                                                               (3, 8)), atol=1e-4)
    np.testing.assert_allclose(x[0, :, 5, 12:], np.broadcast_to(np.array(BLUE, float)[:, None],
                                                                (3, 8)), atol=1e-4)
    bgr = images.net_input(x, net)
    np.testing.assert_allclose(bgr[0, :, 5, 0], np.array(RED[::-1], float) - [1, 2, 3], atol=1e-4)


def test_grey_net_without_bounds_gets_values_in_0_1_at_its_input_size(tmp_path):
    net = Net([Conv2d("conv", 2, kernel=3), Flatten("flat"), Linear("ip", 3)],
              input_shape=(1, 8, 8), seed=0)
    path = tmp_path / "white.png"
    Image.fromarray(np.full((30, 50, 3), 255, np.uint8)).save(path)
    x = images.read_images([path], net)  # nothing recorded: resized to the net's 8×8
    assert x.shape == (1, 1, 8, 8)
    np.testing.assert_allclose(x, 1.0, atol=1e-6)


def test_a_crop_larger_than_the_image_and_a_non_image_are_one_line_errors(tmp_path):
    net = rgb_net((3, 50, 50))
    net.preprocessing = {"crop": 50}
    with pytest.raises(ValueError, match=r"h\.png: 40×80 after resizing is smaller than the "
                                         r"net's 50×50 crop"):
        images.read_image(halves(tmp_path / "h.png"), net)
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    with pytest.raises(ValueError, match=r"notes\.jpg: not an image file Pillow can read"):
        images.read_image(text, net)


def test_without_pillow_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ValueError, match=r"needs Pillow: pip install 'robustcnn\[images\]'"):
        images.read_image(tmp_path / "any.png", rgb_net())


def test_predict_prints_the_top_classes_of_photos(tmp_path, capsys):
    """The packaged Deep Compression SqueezeNet, loaded from its prototxt and weights, carries
    its preprocessing; Chelsea is a cat, the coffee an espresso."""
    data = pytest.importorskip("skimage.data", reason="scikit-image ships the photos")
    from robustcnn.models.squeezenet_dc import PROTOTXT, WEIGHTS

    cat, coffee = tmp_path / "chelsea.jpg", tmp_path / "coffee.png"
    Image.fromarray(data.chelsea()).save(cat)
    Image.fromarray(data.coffee()).save(coffee)
    assert main(["predict", str(PROTOTXT), "--weights", str(WEIGHTS), str(cat), str(coffee),
                 "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{cat}:" and lines[4] == f"{coffee}:" and len(lines) == 8
    first_cat, first_coffee = lines[1].split(), lines[5].split()
    assert 281 <= int(first_cat[1]) <= 285 and float(first_cat[0]) > 0.5  # a cat
    assert first_coffee[1] == "967" and float(first_coffee[0]) > 0.5  # espresso
    probs = [float(line.split()[0]) for line in lines[1:4]]
    assert probs == sorted(probs, reverse=True)


def test_predict_refuses_a_bad_top(capsys):
    assert main(["predict", "model.h5", "x.png", "--top", "0"]) == 2
    assert "--top must be >= 1" in capsys.readouterr().err
