"""Fixtures for the engine tests."""

import numpy as np
import pytest


@pytest.fixture
def rng():
    """A fresh, fixed-seed generator per test: every test sees the same numbers on every run."""
    return np.random.default_rng(1234)
