"""Fuzzing every file format robustcnn reads (``fuzz_formats.FORMATS``): seeded mutants, each
loaded in a child process with a 4 GiB address-space limit and a timeout. A load must end with
the file read or a clean error (a one-line ValueError or FileNotFoundError naming the file):
no other exception, no MemoryError, no hang, no crash, and under 1 GiB of memory for files
under 1 MB.

The default run tries ``SHORT`` mutants per format (seconds each); the slow one (``make fuzz``,
``make test-all``) tries ``FUZZ_MUTANTS`` (default 10,000) per format with two workers and
prints the table (``FUZZ_FORMATS`` picks formats, ``FUZZ_JSON`` keeps the summaries).
"""

import json
import os

import pytest
from fuzz_formats import FORMATS
from fuzz_harness import BYTE_MUTATORS, format_table, mutant, run, write_seeds

SHORT = 24
RSS_LIMIT_MIB = 1024


def _check(summaries):
    for s in summaries:
        where = f"{s['format']}: {s['problems'][:3]}"
        assert s["tried"] > 0
        for outcome in ("unexpected", "memory", "hang", "crash"):
            assert s[outcome] == 0, where
        if s["max_file_bytes"] < 1 << 20:
            assert s["peak_rss_mib"] < RSS_LIMIT_MIB, f"{s['format']}: {s['worst_rss']}"


def test_short_run_of_every_format():
    summaries = run(list(FORMATS), SHORT, workers=1, timeout=300)
    print("\n" + format_table(summaries))
    _check(summaries)
    # The mutants reach past the first checks: some load, and clean errors are counted.
    assert sum(s["loaded"] for s in summaries) > 0
    assert all(s["loaded"] + s["clean"] == s["tried"] for s in summaries)


@pytest.mark.slow
def test_long_run():
    mutants = int(os.environ.get("FUZZ_MUTANTS", 10_000))
    names = os.environ.get("FUZZ_FORMATS", ",".join(FORMATS)).split(",")
    summaries = run(names, mutants, workers=int(os.environ.get("FUZZ_WORKERS", 2)),
                    timeout=float(os.environ.get("FUZZ_TIMEOUT", 120)),
                    findings=os.environ.get("FUZZ_FINDINGS"))
    print("\n" + format_table(summaries))
    if os.environ.get("FUZZ_JSON"):
        with open(os.environ["FUZZ_JSON"], "w") as f:
            json.dump(summaries, f, indent=1)
    _check(summaries)


def test_mutants_are_a_pure_function_of_seed_format_and_index(tmp_path):
    fmt = FORMATS["idx"]
    seeds = write_seeds(fmt, tmp_path)
    first = [mutant(fmt, seeds, i, 14) for i in range(40)]
    assert first == [mutant(fmt, seeds, i, 14) for i in range(40)]
    assert first != [mutant(fmt, seeds, i, 15) for i in range(40)]
    used = {name for _, applied, _ in first for name in applied}
    assert used & set(BYTE_MUTATORS) and used & set(fmt.mutators)


def test_every_format_has_seeds_that_load(tmp_path):
    for name, fmt in FORMATS.items():
        directory = tmp_path / name
        seeds = write_seeds(fmt, directory)
        assert seeds, name
        for seed, data in seeds.items():
            path = directory / fmt.target(seed)
            path.write_bytes(data)
            assert fmt.load(str(path), str(directory)) is not None, f"{name}: {seed}"
