"""Fixtures of the study tests (helpers in ``study_helpers.py``, put on the path here).

Attacks on 32 images call the net on tiny batches, so the tests run single-threaded
(``helpers.single_thread``), as the attack tests do.
"""

import os
import sys

import pytest
from helpers import single_thread

sys.path.insert(0, os.path.dirname(__file__))

from study_helpers import tiny_config, write_tiny_mnist  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory):
    return write_tiny_mnist(tmp_path_factory.mktemp("data"))


@pytest.fixture
def tiny_study(tiny_mnist):
    from robustcnn.study.config import parse_config

    return parse_config(tiny_config(tiny_mnist), source="tiny.toml")
