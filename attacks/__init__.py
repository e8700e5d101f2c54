"""Gradient attacks computed on the engine's own gradients, and robustness evaluation.

One module and one function per attack (``fgsm(net, x, y, eps, *, clip=(0, 1), targeted=False)``).
"""

from .evaluate import format_table, robustness_table
from .fgsm import fgsm

ATTACKS = {"fgsm": fgsm}

__all__ = ["fgsm", "robustness_table", "format_table", "ATTACKS"]
