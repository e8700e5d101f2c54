"""Fixtures for the ONNX importer and exporter tests: onnxruntime as the oracle, the ONNX
model zoo's light models that the onnx wheel ships; ``onnx_files.py`` builds small models."""

import os
import sys

import pytest

pytest.importorskip("onnx", reason="onnx (the onnx extra) reads ONNX files")
sys.path.insert(0, os.path.dirname(__file__))  # onnx_files.py: model builders and oracles


@pytest.fixture(scope="session")
def ort():
    return pytest.importorskip("onnxruntime", reason="onnxruntime (test extra) is the oracle")
