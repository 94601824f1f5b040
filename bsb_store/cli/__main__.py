"""``python -m bsb_store.cli``: the ``bsb-store`` command line."""

import sys

from . import main

sys.exit(main())
