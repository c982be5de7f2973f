"""greenzmq: the whole pyzmq API for gevent, where a blocking call blocks only its greenlet."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
# the one version source, read without importing greenzmq (its dependencies may be missing)
VERSION = re.search(r'^VERSION = "([^"]+)"$', (HERE / "greenzmq" / "_version.py").read_text(), re.M)[1]

setup(
    name="greenzmq",
    version=VERSION,
    description="pyzmq for gevent: every call that would block the thread blocks only the greenlet",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.9",
    packages=find_packages(include=["greenzmq", "greenzmq.*"]),
    package_data={"greenzmq": ["py.typed"]},
    install_requires=[
        "pyzmq>=26.4",
        "gevent>=23.9",
        "greenlet>=3.0",
    ],
    extras_require={
        "test": [
            "pytest>=7.4",
            "pytest-timeout>=2.2",
            "psutil>=5.9",
            "numpy>=1.24",
            "msgpack>=1.0",
            "locust>=2.20",
            "hypothesis>=6",
            "paramiko>=3",
            # zmq.eventloop (pyzmq's tornado integration) under greenzmq.monkey
            "tornado>=6",
            # CI's style, type and release checks (.ci/run)
            "ruff>=0.6",
            "mypy>=1.10",
            "build>=1",
            "twine>=5",
        ],
        "load": ["locust>=2.20"],
        "ssh": ["paramiko>=3"],
        "msgpack": ["msgpack>=1.0"],
        "numpy": ["numpy>=1.24"],
        # the documentation site (scripts/build-docs.sh; Sphinx 9 needs Python 3.11+)
        "docs": ["sphinx>=9,<10", "myst-parser>=5,<6", "furo>=2025.12"],
    },
    # the Python versions CI runs the tests on (.ci/run): the whole suite on
    # 3.11, the green core's tests on the oldest and the newest supported
    classifiers=[
        "Development Status :: 4 - Beta",
        "Framework :: Gevent",
        "Intended Audience :: Developers",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.13",
        "Programming Language :: Python :: Implementation :: CPython",
        "Topic :: System :: Networking",
        "Typing :: Typed",
    ],
)
