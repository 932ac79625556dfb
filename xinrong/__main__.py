"""``python -m xinrong demo``."""

import sys

from xinrong.cli import main

sys.exit(main())
