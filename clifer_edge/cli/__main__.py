"""``python -m clifer_edge.cli``: the same as ``clifer-edge``."""

import sys

from clifer_edge.cli import main

sys.exit(main())
