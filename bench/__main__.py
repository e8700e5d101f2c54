"""``python -m robustcnn.bench``: the same as ``python bench.py`` in a checkout."""

from .cli import main

main()
