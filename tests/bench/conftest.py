"""Fixtures for the bench tests."""

import pytest

from robustcnn.bench.common import Budget


@pytest.fixture
def tiny():
    """A time budget of two timed calls a side: the tests check what a case computes, not how
    fast."""
    return Budget(reps=2, seconds=0.0, warmup=1, turn=0.0)
