"""The benchmark: robustcnn side by side with its peers (torch CPU, scipy.sparse, NumPy), in one
process, with the same threads. Run it as ``python bench.py`` in a checkout or
``python -m robustcnn.bench``; ``cli.py`` documents the flags.

One module per suite, and what they share:

    cli.py        flags; ``SUITES``, the sections in the order they run and report
    common.py     time budgets, timing by turns (load, page faults), the output check, tables,
                  ``Suite``
    machine.py    CPU, peak and measured SGEMM, libraries and thread pools: the header
    pairs.py      cases of ours against one peer: check, time, table, targets, records
    dense.py      conv, FC and LeNet-5 against torch (pair cases)
    attacks.py    PGD-40 against the same attack in torch (pair cases)
    coldstart.py  a fresh interpreter to the first LeNet-5 forward
    formats/      pruned weights in every format, Huffman decode, bytes per format

Adding a suite is a module with its ``Suite`` and one line in ``cli.SUITES``; adding a family
of pair cases (a peer for a whole net, say) is one function () → [pairs.Case] in the pair
suite's list there. Importing this package imports neither torch nor the suites: torch, a
bench-only extra, is imported where a case is built or the bench runs, and ``import robustcnn``
never imports the bench.
"""
