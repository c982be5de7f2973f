"""``python -m greenzmq.demo``: see :mod:`greenzmq.demo`."""

import sys

from greenzmq.demo import main

if __name__ == "__main__":
    sys.exit(main())
