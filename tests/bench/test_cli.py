"""bench/cli.py: the flags, the order in which the suites run and report, the records file; and
the package's boundary: torch and the bench are imported only by the bench."""

import importlib
import json
import os
import pkgutil
import subprocess
import sys

import pytest

import robustcnn
from robustcnn.bench import cli
from robustcnn.bench.common import Suite
from robustcnn.bench.formats import suite as formats


def test_the_formats_flags_parse():
    args = cli.parse_args(["--formats", "--bytes-json", "b.json", "--cases", "fc"])
    assert args.formats and args.bytes_json == "b.json" and args.cases == "fc"
    assert [c.name for c in formats.format_cases(match="no such case")] == []


def test_contend_counts_processes_and_defaults_to_the_thread_count():
    assert cli.parse_args([]).contend == 0
    assert cli.parse_args(["--contend"]).contend == -1  # main sets Numba's thread count
    assert cli.parse_args(["--contend", "3"]).contend == 3
    with pytest.raises(SystemExit):
        cli.parse_args(["--contend", "-4"])


def test_main_plans_every_suite_then_runs_reports_and_records_those_planned(
        monkeypatch, tmp_path, capsys):
    pytest.importorskip("torch")
    calls = []

    def fake(name, plan, peak):
        return Suite(
            name,
            plan=lambda args: calls.append(("plan", name)) or plan,
            run=lambda plan, budget: calls.append(("run", name, plan)) or f"{name} outcome",
            report=lambda outcome, args, peak: calls.append(("report", name, outcome, peak)),
            targets=lambda outcome: [(f"{name} target", outcome, "PASS")],
            records=lambda outcome: [{"case": name, "outcome": outcome}],
            needs_peak=lambda plan: peak)

    def header(torch, budget, *, sgemm):
        calls.append(("header", sgemm))
        return 1.0, "fake"

    monkeypatch.setattr(cli, "SUITES", (fake("a", 1, False), fake("left out", None, True),
                                        fake("b", 2, True)))
    monkeypatch.setattr(cli, "print_header", header)
    cli.main(["--quick", "--json", str(tmp_path / "r.json")])
    assert calls == [("plan", "a"), ("plan", "left out"), ("plan", "b"), ("header", True),
                     ("run", "a", 1), ("run", "b", 2),
                     ("report", "a", "a outcome", (1.0, "fake")),
                     ("report", "b", "b outcome", (1.0, "fake"))]
    out = capsys.readouterr().out
    assert "a target" in out and "b outcome" in out and "left out" not in out
    assert json.loads((tmp_path / "r.json").read_text()) == [
        {"case": "a", "outcome": "a outcome"}, {"case": "b", "outcome": "b outcome"}]


def _modules_outside_the_bench(package, prefix):
    """Every module of the package except the bench and ``__main__``s, without importing the
    bench (pkgutil.walk_packages imports each package to walk into it)."""
    for info in pkgutil.iter_modules(package.__path__, prefix):
        name = info.name.rsplit(".", 1)[1]
        if name in ("bench", "__main__"):
            continue
        yield info.name
        if info.ispkg:
            yield from _modules_outside_the_bench(importlib.import_module(info.name),
                                                  info.name + ".")


def test_only_the_bench_imports_torch_and_nothing_imports_the_bench():
    names = list(_modules_outside_the_bench(robustcnn, "robustcnn."))
    assert "robustcnn.engine.conv" in names and "robustcnn.compress.prune" in names
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules\n"
            "             if m == 'torch' or m.startswith('robustcnn.bench')))\n"
            "import robustcnn.bench.cli, robustcnn.bench.formats.suite\n"
            "print('torch' in sys.modules)\n")
    root = os.path.dirname(os.path.dirname(robustcnn.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=300).stdout.splitlines()
    assert out == ["[]", "False"]
