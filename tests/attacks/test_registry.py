"""The attack registry: every record agrees with its function, the package's docstring and
``__all__``, the tables derived from it, the command line's help; the attacks package has no
import cycle."""

import ast
import inspect
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from attack_nets import bars, bars_convnet, make_linear_net

import robustcnn.attacks as attacks_package
from robustcnn.attacks import ATTACKS, registry
from robustcnn.attacks.registry import (ALIASES, SPECS, AttackSpec, attack_names, attack_spec,
                                        attack_specs, canonical_name, iterative_attacks,
                                        noise_attack, resolve_attack, single_step_attack)

IDS = [s.name for s in SPECS]
NET = make_linear_net(np.array([[1.0, -1.0], [-1.0, 1.0], [0.5, 0.5]]), np.zeros(3))
X = np.array([[0.3, 0.6], [0.9, 0.1]])
Y = np.array([1, 0])
# Options that keep the slow attacks short on the small nets of these tests.
QUICK = {"cw-l2": dict(max_iter=20, binary_search_steps=2), "pgd-linf": dict(steps=3),
         "pgd-l2": dict(steps=3), "lbfgs": dict(max_iter=10, search_steps=2),
         "spsa": dict(steps=3, samples=8), "hsj-l2": dict(n_queries=200, steps=4),
         "hsj-linf": dict(n_queries=200, steps=4)}
QUICK.update({f"{a}-{n}": dict(n_iter=5) for a in ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t")
              for n in ("linf", "l2")})
QUICK.update({f"square-{n}": dict(n_queries=50) for n in ("linf", "l2")})
QUICK.update({f"autoattack-{n}": dict(n_iter=5, n_queries=50) for n in ("linf", "l2")})


def _eps(spec):
    return 0.1 if spec.bounded else None


# ---------------------------------------------------------------------------------------------
# Each record against its function


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_every_function_takes_the_common_signature(spec):
    params = inspect.signature(spec.attack).parameters
    names = list(params)
    assert names[:4] == ["net", "x", "y", "eps"]
    for name in registry.COMMON_PARAMETERS:
        assert name in params, f"{spec.name}: no {name} parameter"
    for name in ("clip", "targeted", "batch_size", "seed", "progress"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["y"].default is None and params["progress"].default is None
    assert params["clip"].default == (0.0, 1.0) and params["targeted"].default is False
    assert params["batch_size"].default == 256 and params["seed"].default == 0
    # Unbounded attacks default to their own minimal perturbation.
    assert (params["eps"].default is None) == (not spec.bounded)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_step_flags_match_the_signature(spec):
    params = inspect.signature(spec.function).parameters
    assert spec.steps == ("steps" in params)
    assert spec.step_size == ("alpha" in params)
    assert all(k in params for k in spec.options)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_the_norm_is_bound_where_the_function_takes_one(spec):
    params = inspect.signature(spec.function).parameters
    if "norm" in params:
        assert spec.attack is not spec.function
        assert spec.attack.keywords["norm"] == spec.norm
        assert spec.attack.__name__ == spec.name.replace("-", "_")
        # The bound signature shows the bound norm, not the function's default.
        assert inspect.signature(spec.attack).parameters["norm"].default == spec.norm
    else:
        assert spec.attack is spec.function


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_eps_zero_returns_the_input(spec):
    out = spec.attack(NET, X, Y, 0.0)
    np.testing.assert_array_equal(out, X)
    assert out is not X


@pytest.mark.parametrize("spec", [s for s in SPECS if s.bounded],
                         ids=[s.name for s in SPECS if s.bounded])
def test_bounded_attacks_stay_in_the_ball_of_their_norm(spec):
    from robustcnn.attacks.norms import perturbation_norms

    x, y = bars(6)
    net = bars_convnet()
    eps = 0.05 if spec.norm == "linf" else 0.5
    out = spec.attack(net, x, y, eps, **QUICK.get(spec.name, {}))
    sizes = perturbation_norms(x, out)[spec.norm]
    assert sizes.max() <= eps * (1 + 1e-5)
    if spec.kind != registry.ENSEMBLE:  # AutoAttack keeps x where no attack of it succeeded
        assert sizes.max() > 0  # it moved


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_targeted_flag_matches_what_the_attack_accepts(spec):
    if spec.targeted:
        out = spec.attack(NET, X, np.array([2, 2]), _eps(spec), targeted=True,
                          **QUICK.get(spec.name, {}))
        assert out.shape == X.shape
    else:
        with pytest.raises(ValueError, match="targeted=True is not supported"):
            spec.attack(NET, X, Y, _eps(spec), targeted=True)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_gradient_free_attacks_never_call_backward(spec, monkeypatch):
    net = bars_convnet()
    x, y = bars(4)
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    original = net.backward
    monkeypatch.setattr(net, "backward", counting)
    spec.attack(net, x, y, _eps(spec), **QUICK.get(spec.name, {}))
    assert bool(calls) == spec.gradients


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_progress_counts_every_example_and_changes_nothing(spec):
    """``progress`` hears of every example once (per outer batch; per example for L-BFGS, once
    for the noise) and the result does not depend on it."""
    x, y = bars(10)
    net = bars_convnet()
    kwargs = dict(batch_size=4, seed=3, **QUICK.get(spec.name, {}))
    seen = []
    reported = spec.attack(net, x, y, _eps(spec), progress=seen.append, **kwargs)
    assert sum(seen) == len(x) and all(n > 0 for n in seen)
    np.testing.assert_array_equal(reported, spec.attack(net, x, y, _eps(spec), **kwargs))


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_progress_must_be_callable(spec):
    with pytest.raises(ValueError, match=r"progress must be a callable or None, got 3"):
        spec.attack(NET, X, Y, _eps(spec), progress=3)


def test_composed_attacks_pass_progress_through():
    """ILLC runs BIM, PGD runs its restarts: each outer batch of the attack that does the work
    is reported, once per restart for PGD (the examples no restart has fooled yet)."""
    from robustcnn.attacks import illc, pgd

    x, y = bars(10)
    net = bars_convnet()
    seen = []
    illc(net, x, y, 0.1, steps=2, batch_size=4, progress=seen.append)
    assert seen == [4, 4, 2]
    seen = []
    pgd(net, x, y, 0.01, steps=1, restarts=2, batch_size=4, progress=seen.append)
    assert seen[:3] == [4, 4, 2] and sum(seen) <= 20


# ---------------------------------------------------------------------------------------------
# Names and lookups


def test_names_and_aliases_resolve_in_any_case():
    for spec in SPECS:
        for key in (spec.name,) + spec.aliases:
            for variant in (key, key.upper(), f"  {key.title()} "):
                assert canonical_name(variant) == spec.name
                assert attack_spec(variant) is spec
                assert resolve_attack(variant, "test") is spec.attack
    assert dict(ALIASES) == {"pgd": "pgd-linf", "cw": "cw-l2", "carlini-wagner": "cw-l2",
                             "noise": "noise-linf", "apgd-ce": "apgd-ce-linf",
                             "apgd": "apgd-ce-linf", "apgd-dlr": "apgd-dlr-linf",
                             "apgd-t": "apgd-t-linf", "fab": "fab-linf", "fab-t": "fab-t-linf",
                             "square": "square-linf", "hsj": "hsj-l2", "hopskipjump": "hsj-l2",
                             "autoattack": "autoattack-linf", "aa": "autoattack-linf"}
    assert resolve_attack(len, "test") is len  # a callable passes through


def test_unknown_names_give_one_line_listing_names_and_aliases():
    with pytest.raises(ValueError) as e:
        canonical_name("fgsn", at="--attack")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("--attack: unknown attack 'fgsn'; known: apgd-ce-l2, apgd-ce-linf, ")
    for spec in SPECS:
        assert spec.name in message
        for alias in spec.aliases:
            assert f"{alias}={spec.name}" in message
    with pytest.raises(ValueError, match="^study: unknown attack None"):
        resolve_attack(None, "study")


def test_filters():
    assert attack_names(bounded=False) == ("deepfool", "cw-l2", "jsma", "lbfgs", "fab-linf",
                                           "fab-l2", "fab-t-linf", "fab-t-l2", "hsj-l2",
                                           "hsj-linf")
    assert attack_names(bounded=True, norm="l2") == ("fgm-l2", "apgd-ce-l2", "apgd-dlr-l2",
                                                     "apgd-t-l2", "pgd-l2", "square-l2",
                                                     "autoattack-l2", "noise-l2")
    assert attack_names(steps=True) == ("bim", "illc", "pgd-linf", "pgd-l2", "spsa", "hsj-l2",
                                        "hsj-linf")
    query = ("square-linf", "square-l2", "spsa", "hsj-l2", "hsj-linf")
    assert attack_names(gradients=False) == query + ("noise-linf", "noise-l2")
    assert attack_names(query_based=True) == query
    assert attack_specs() == SPECS
    with pytest.raises(ValueError, match="^attack_specs: unknown property 'nrom'"):
        attack_specs(nrom="l2")


def test_the_reference_attacks_of_the_sanity_checks():
    assert single_step_attack("linf") == "fgsm" and single_step_attack("l2") == "fgm-l2"
    # Not ILLC: it aims elsewhere. PGD last: the reference the checks run themselves.
    assert iterative_attacks("linf") == ("bim", "apgd-ce-linf", "apgd-dlr-linf", "apgd-t-linf",
                                         "pgd-linf")
    assert iterative_attacks("l2") == ("apgd-ce-l2", "apgd-dlr-l2", "apgd-t-l2", "pgd-l2")
    assert noise_attack("linf") == "noise-linf" and noise_attack("l2") == "noise-l2"
    with pytest.raises(ValueError, match="no single-step attack for the norm 'l0'"):
        single_step_attack("l0")


def test_bad_records_and_clashing_names_are_refused():
    with pytest.raises(ValueError, match="norm 'l1' is not one of"):
        AttackSpec("x", len, None, "l1", True, registry.NOISE)
    with pytest.raises(ValueError, match="kind 'magic' is not one of"):
        AttackSpec("x", len, None, "l2", True, "magic")
    with pytest.raises(ValueError, match="lower-case"):
        AttackSpec("X", len, None, "l2", True, registry.NOISE)
    with pytest.raises(ValueError, match="lower-case"):
        AttackSpec("x", len, None, "l2", True, registry.NOISE, aliases=("Y",))
    a = AttackSpec("a", len, None, "l2", True, registry.NOISE, aliases=("b",))
    with pytest.raises(ValueError, match="'b' names both 'a' and 'b'"):
        registry._index([a, AttackSpec("b", len, None, "l2", True, registry.NOISE)])


def test_records_are_frozen():
    with pytest.raises(AttributeError):
        SPECS[0].norm = "l2"
    with pytest.raises(TypeError):
        SPECS[0].options["norm"] = "l2"


# ---------------------------------------------------------------------------------------------
# The tables derived from the registry


def test_derived_tables():
    from robustcnn.attacks.evaluate import BOUNDED, UNBOUNDED, canonical_attack
    from robustcnn.attacks.evaluate import ALIASES as EVALUATE_ALIASES

    assert list(ATTACKS) == [s.name for s in SPECS]
    assert all(ATTACKS[s.name] is s.attack for s in SPECS)
    assert BOUNDED == {s.name: s.norm for s in SPECS if s.bounded}
    assert UNBOUNDED == {s.name: s.norm for s in SPECS if not s.bounded}
    assert EVALUATE_ALIASES == dict(ALIASES)
    assert canonical_attack("PGD") == "pgd-linf"
    with pytest.raises(ValueError, match="^evaluate: unknown attack 'x'"):
        canonical_attack("x")


# ---------------------------------------------------------------------------------------------
# Documentation: the package docstring, __all__, the command line


def test_every_record_is_in_the_package_docstring_and_all():
    doc = attacks_package.__doc__
    lines = {line.split()[0]: line for line in doc.splitlines() if line.startswith("    ")
             and line.split()}
    for spec in SPECS:
        assert spec.name in lines, f"{spec.name} has no line in attacks/__init__'s table"
        line = lines[spec.name]
        assert line.split()[1:5] == [spec.norm, "radius" if spec.bounded else "minimal",
                                     spec.kind, spec.function.__name__], line
        assert (spec.paper or "a baseline") in line, line
        for alias in spec.aliases:
            assert f"{alias} = {spec.name}" in doc
        assert spec.function.__name__ in attacks_package.__all__
        assert getattr(attacks_package, spec.function.__name__) is spec.function
    assert "ATTACKS" in attacks_package.__all__ and "registry" in doc


def test_the_attack_command_lists_every_name(capsys, monkeypatch):
    from robustcnn.cli import main

    monkeypatch.setenv("COLUMNS", "10000")  # one line per option: no wrap inside a name
    assert main(["attack", "--help"]) == 0  # main returns argparse's exit code
    text = capsys.readouterr().out
    help_line = next(line for line in text.splitlines() if "--attack ATTACK " in line
                     and "bounded" in line)
    bounded_part, _, unbounded_part = help_line.partition("unbounded")
    for spec in SPECS:
        part = bounded_part if spec.bounded else unbounded_part
        for key in (spec.name,) + spec.aliases:
            assert re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", part), \
                f"{key} not listed with the {'bounded' if spec.bounded else 'unbounded'} ones"


# ---------------------------------------------------------------------------------------------
# The import graph of the package


def _imports(path, package):
    """The modules of ``package`` that the file ``path`` imports (anywhere in it), by name;
    "__init__" for the package itself."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                if node.module:
                    out.add(node.module.split(".")[0])
                else:
                    for alias in node.names:
                        is_module = os.path.exists(os.path.join(package, alias.name + ".py"))
                        out.add(alias.name if is_module else "__init__")
            elif node.module and node.module.startswith("robustcnn.attacks"):
                rest = node.module[len("robustcnn.attacks"):].lstrip(".")
                out.add(rest.split(".")[0] or "__init__")
    return out


def test_the_attacks_package_has_no_import_cycle():
    package = os.path.dirname(attacks_package.__file__)
    modules = [f[:-3] for f in os.listdir(package) if f.endswith(".py") and f != "__init__.py"]
    graph = {m: _imports(os.path.join(package, m + ".py"), package) for m in modules}
    for m, deps in graph.items():
        assert "__init__" not in deps, f"attacks/{m}.py imports the package's __init__"

    def visit(m, path):
        assert m not in path, f"import cycle: {' -> '.join(path + [m])}"
        for d in sorted(graph.get(m, ())):
            visit(d, path + [m])

    for m in sorted(graph):
        visit(m, [])


@pytest.mark.parametrize("first", ["sanity", "evaluate", "_common", "registry"])
def test_each_module_imports_first_in_a_fresh_interpreter(first):
    code = (f"import robustcnn.attacks.{first}; import robustcnn.attacks.sanity, "
            f"robustcnn.attacks.evaluate; from robustcnn.attacks import ATTACKS; "
            f"print(len(ATTACKS))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(len(SPECS))
