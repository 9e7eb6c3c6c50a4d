"""SIGINT and SIGTERM as a request to stop, not an exception thrown into whatever runs.

A node process is stopped by ``ros2 launch`` (SIGINT, then SIGTERM), by Ctrl-C and by process
managers.  rclpy's own handlers shut the context down at once, under the feet of threads that are
still publishing, and a KeyboardInterrupt raised inside a callback can abort the interpreter.  Here
a signal only sets an event; the spin loop sees it within 0.1 s, the node stops its threads, and
only then is the context shut down, so the process ends with exit 0 and no traceback.

A terminal's Ctrl-C reaches every process of the group and ``ros2 launch`` forwards one more, so a
node gets SIGINT twice, the second one 0 to 100 ms into its shutdown.  Python restores SIGINT's
default action while the interpreter finalises, and a signal then kills the process (-2).  So the
first stop request turns both signals to *ignored*, which survives finalisation; ``launch``'s
escalation to SIGKILL still ends a node that hangs.
"""
from __future__ import annotations

import os
import signal
import threading

STOP = threading.Event()
_installed = False
_starting = True   # before the node's ROS context exists there is nothing to clean up


def install() -> threading.Event:
    """Route SIGINT and SIGTERM to :data:`STOP` (from the main thread; idempotent)."""
    global _installed
    if not _installed and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _request_stop)
        _installed = True
    return STOP


def running() -> None:
    """From here on a signal is a stop request the spin loop honours (the context exists)."""
    global _starting
    _starting = False


def ignore_further() -> None:
    """From now on SIGINT and SIGTERM are ignored: the process is already on its way out."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def _request_stop(signum, frame) -> None:
    if _starting:
        os._exit(0)   # still importing or parsing: no context, no threads, nothing to tear down
    ignore_further()
    STOP.set()
