"""Install greenzmq as ``zmq.green`` in every interpreter started with this
directory on PYTHONPATH (pyzmq's own test suite imports ``zmq.green``)."""

import sys

import zmq

import greenzmq

sys.modules["zmq.green"] = greenzmq
zmq.green = greenzmq
