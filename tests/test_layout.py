"""The test tree's own layout: with ``pythonpath = ["tests"]`` and importlib mode, helper modules
are imported by their bare names, so two helpers of one name in different folders would shadow
each other depending on which test ran first in a process."""

import collections
import pathlib


def test_helper_modules_have_unique_names():
    root = pathlib.Path(__file__).parent
    helpers = [p for p in root.rglob("*.py")
               if not p.name.startswith("test_") and p.name not in ("conftest.py", "__init__.py")]
    names = collections.Counter(p.name for p in helpers)
    clashes = sorted(str(p.relative_to(root)) for p in helpers if names[p.name] > 1)
    assert not clashes, f"helper modules sharing a name: {clashes}"
