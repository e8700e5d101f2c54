"""Fixtures for the attack tests.

Attacks call the net many times on tiny batches; waking Numba's thread pool for each call costs
more than the work (tens of milliseconds when other processes hold the cores), so every attack
test runs single-threaded (``helpers.single_thread``, as the finite-difference checks do).
The nets the tests build live in ``attack_nets.py``, put on the path here.
"""

import os
import sys

import numpy as np
import pytest
from helpers import single_thread

sys.path.insert(0, os.path.dirname(__file__))

from attack_nets import make_convnet, make_linear_net  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture
def linear_net():
    return make_linear_net


@pytest.fixture
def convnet():
    return make_convnet


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
