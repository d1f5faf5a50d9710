"""``python -m botscale`` runs the ``botscale`` command (see :mod:`botscale.cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
