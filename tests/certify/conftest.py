"""Fixtures for the certification tests: single-threaded kernels (bound passes on tiny nets,
many times), a fixed-seed generator, and ``certify_nets`` on the path."""

import os
import sys

import numpy as np
import pytest
from helpers import single_thread

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
