"""``python -m qhil.host`` is the ``qhil`` command."""

from __future__ import annotations

import sys

from qhil.host._cli import main

if __name__ == "__main__":
    sys.exit(main())
