"""``python -m bench``: the full benchmark suite (see :mod:`bench.run`)."""

import sys

from bench.run import main

__all__: list[str] = []

sys.exit(main())
