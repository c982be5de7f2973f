"""greenzmq's version: the one place it is written.

``setup.py`` reads it from this file (without importing the package, whose
dependencies may not be installed yet), and :mod:`greenzmq` exports it as
``greenzmq_version`` (``greenzmq.__version__`` is pyzmq's, as in :mod:`zmq`,
so that code checking pyzmq's version keeps working).
"""

__all__ = ["VERSION"]

VERSION = "0.1.0"
