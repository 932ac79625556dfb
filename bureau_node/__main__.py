"""``python -m bureau_node``: the same as the ``bureau-node`` command."""

import sys

from bureau_node.cli import main

sys.exit(main())
