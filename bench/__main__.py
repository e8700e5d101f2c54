"""``python -m robustcnn.bench``: the same as ``python bench.py`` in a checkout."""

from .cli import main

main(prog="python -m robustcnn.bench")
