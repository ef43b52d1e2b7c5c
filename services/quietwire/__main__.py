"""``python -m quietwire``: the same as the ``quietwire`` command."""

import sys

from quietwire.cli import main

sys.exit(main())
