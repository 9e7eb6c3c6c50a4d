"""Console entry points of the node executables.

Each one routes SIGINT and SIGTERM to a stop request *before* importing its node, whose imports
(rclpy, numpy, a model) take most of a second: a Ctrl-C during start-up then ends the process with
exit 0 instead of a KeyboardInterrupt traceback from the middle of an import.
"""
from __future__ import annotations

import importlib

from . import stop


def _run(module: str) -> int:
    stop.install()
    if stop.STOP.is_set():
        return 0
    try:
        main = importlib.import_module(f"scannernet_ros.nodes.{module}").main
        code = main()  # rclpy reads the ROS arguments from sys.argv
    except KeyboardInterrupt:  # a signal before install() could take effect
        code = 0
    stop.ignore_further()   # a signal during the interpreter's own finalisation would kill it (-2)
    return code



def pushbroom_camera() -> int:
    return _run("pushbroom_camera")


def segmenter() -> int:
    return _run("segmenter")


def waterfall() -> int:
    return _run("waterfall")


def bag_player() -> int:
    return _run("bag_player")


def evaluator() -> int:
    return _run("evaluator")
