"""``python bench.py [--quick] [--json FILE] [--formats] [--cases TEXT] [--bytes-json FILE]``:
the benchmark, run from a checkout. The code is the package ``robustcnn.bench`` (bench/);
``bench/cli.py`` documents the flags."""

from robustcnn.bench.cli import main

if __name__ == "__main__":
    main()
