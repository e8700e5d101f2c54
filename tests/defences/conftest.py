"""Fixtures for the defence tests: single-threaded kernels (tiny batches, many calls) and a
fixed-seed generator."""

import numpy as np
import pytest
from helpers import single_thread


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
