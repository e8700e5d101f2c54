"""Suite-wide collection: ``ROBUSTCNN_TEST_SAMPLE=cover`` keeps a representative sample of the
collected cases and deselects the rest: the first case of every test function, and the first
case that brings each parameter value (a format kind, a dtype, a flag …, by name and value)
not met yet anywhere in the run. A second pass over a folder — the bounds-checked run of the
weight formats in ``make test`` — so runs every test's code once and every kernel family on
every format, in a fraction of the cases; ``make test-boundscheck`` runs them all."""

import os

_PLAIN = (str, int, float, bool, type(None))


def _values(item):
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return set()
    return {(name, value) for name, value in callspec.params.items()
            if isinstance(value, _PLAIN)}


def pytest_collection_modifyitems(config, items):
    if os.environ.get("ROBUSTCNN_TEST_SAMPLE") != "cover":
        return
    kept, dropped, functions, values = [], [], set(), set()
    for item in items:
        function = (item.path, getattr(item, "originalname", item.name))
        new = _values(item) - values
        (kept if function not in functions or new else dropped).append(item)
        functions.add(function)
        values |= new
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
