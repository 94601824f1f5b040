"""``python -m bsb_store``: the ``bsb-store`` command line."""

import sys

from .cli import main

sys.exit(main())
