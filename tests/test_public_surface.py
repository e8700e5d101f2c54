"""The package's public surface: what ``robustcnn.compress`` and ``robustcnn.models`` export (and
that importing them stays light), and that nothing outside ``engine/`` reaches into a private
attribute of ``Net`` (STYLE.md, "One home per concept")."""

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

import robustcnn

ROOT = pathlib.Path(robustcnn.__file__).resolve().parent
PACKAGES = ("robustcnn.compress", "robustcnn.models")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves_and_is_listed(package):
    module = importlib.import_module(package)
    assert module.__all__ and len(set(module.__all__)) == len(module.__all__)
    assert set(module.__all__) <= set(dir(module))
    for name in module.__all__:
        value = getattr(module, name)
        if hasattr(value, "__module__") and not isinstance(value, type(sys)):
            # the object its own module defines, not a copy or an alias
            assert getattr(sys.modules[value.__module__], name) is value, name
        assert getattr(module, name) is value  # and it stays what it is
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        module.no_such_name


def test_importing_compress_and_models_loads_no_dependency():
    """The exports load on first use: the imports stay as light as before (no NumPy, Numba,
    h5py; no optional dependency)."""
    code = ("import sys, robustcnn.compress, robustcnn.models; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ("
            "'numpy', 'numba', 'scipy', 'h5py', 'google', 'matplotlib', 'dask', 'torch', "
            "'keras', 'tqdm'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == ""


# ---------------------------------------------------------------------------------------------
# Net's private attributes stay in the engine


def net_private_names():
    """Every private (single-underscore) attribute and method of a built Net."""
    from robustcnn.engine import Net
    from robustcnn.models.lenet import lenet5

    names = set(vars(lenet5())) | set(dir(Net))
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def sources_outside_the_engine():
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if parts[0] == "engine" or parts[:2] == ("tests", "engine") or ".venv" in parts:
            continue
        yield path


def private_net_accesses(source, private):
    """(line, "receiver._name") for each ``x._name`` with ``_name`` a private attribute of Net,
    but for ``self``/``cls`` (a class's own attributes: none outside the engine is a Net)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in private and not (
                isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            found.append((node.lineno, f"{ast.unparse(node.value)}.{node.attr}"))
    return found


def test_the_check_finds_private_accesses():
    private = net_private_names()
    assert {"_plan", "_logits_id", "_output_id", "_seed", "_shapes", "_rng", "_run",
            "_forward_keep"} <= private
    source = "def f(net, self):\n    return net._plan, self.net._seed, self._rng, net.seed\n"
    assert private_net_accesses(source, private) == [(2, "net._plan"), (2, "self.net._seed")]


def test_nothing_outside_the_engine_reads_a_private_attribute_of_net():
    private = net_private_names()
    sources = list(sources_outside_the_engine())
    assert any(p.parts[-2:] == ("models", "zoo.py") for p in sources)
    offenders = [f"{path.relative_to(ROOT)}:{line}: {what}" for path in sources
                 for line, what in private_net_accesses(path.read_text(), private)]
    assert not offenders, "use Net's public methods instead:\n" + "\n".join(offenders)
