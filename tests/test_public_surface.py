"""The package's public surface: nothing outside ``engine/`` reaches into a private attribute of
``Net`` (STYLE.md, "One home per concept")."""

import ast
import pathlib

import robustcnn

ROOT = pathlib.Path(robustcnn.__file__).resolve().parent


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
