"""``python -m bank_node``: the same as the ``bank-node`` command."""

import sys

from bank_node.cli import main

sys.exit(main())
