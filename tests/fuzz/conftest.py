"""The fuzzing suite's helpers (``fuzz_harness.py``, ``fuzz_formats.py``), put on the path."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
