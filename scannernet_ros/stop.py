"""SIGINT and SIGTERM as a request to stop, not an exception thrown into whatever runs.

A node process is stopped by ``ros2 launch`` (SIGINT, then SIGTERM), by Ctrl-C and by process
managers.  rclpy's own handlers shut the context down at once, under the feet of threads that are
still publishing, and a KeyboardInterrupt raised inside a callback can abort the interpreter.  Here
a signal only sets an event; the spin loop sees it within 0.1 s, the node stops its threads, and
only then is the context shut down, so the process ends with exit 0 and no traceback.
"""
from __future__ import annotations

import signal
import threading

STOP = threading.Event()
_installed = False


def install() -> threading.Event:
    """Route SIGINT and SIGTERM to :data:`STOP` (from the main thread; idempotent)."""
    global _installed
    if not _installed and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _request_stop)
        _installed = True
    return STOP


def _request_stop(signum, frame) -> None:
    STOP.set()
