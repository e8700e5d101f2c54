"""``python -m robustcnn``: the same as the ``robustcnn`` command."""

import sys

from .cli import main

sys.exit(main())
