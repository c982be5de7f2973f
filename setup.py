"""greenzmq: the whole pyzmq API for gevent, where a blocking call blocks only its greenlet."""

from setuptools import find_packages, setup

setup(
    name="greenzmq",
    version="0.1.0",
    description="pyzmq for gevent: every call that would block the thread blocks only the greenlet",
    long_description=open("README.md", encoding="utf-8").read(),
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
        ],
        "load": ["locust>=2.20"],
        "ssh": ["paramiko>=3"],
        "msgpack": ["msgpack>=1.0"],
        "numpy": ["numpy>=1.24"],
    },
    classifiers=[
        "Framework :: Gevent",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Networking",
        "Typing :: Typed",
    ],
)
