"""Publishing on a schedule from a thread of its own, as sensor drivers and bag players do."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def run_paced(items: Iterable[T], publish: Callable[[T], None], stop: threading.Event,
              due_ns: Callable[[T], int] | None = None, flush: Callable[[], None] | None = None,
              batch: int = 100) -> bool:
    """Publish each item at ``due_ns(item)`` (wall clock, ns), or back to back when ``due_ns`` is None.

    Unpaced, ``flush`` (waiting for the subscribers' acknowledgements) runs every ``batch`` items,
    so a fast publisher cannot run ahead of reliable subscribers and overflow their queues.
    Returns False if stopped early.
    """
    for n, item in enumerate(items, 1):
        if due_ns is not None:
            if stop.wait(max(0.0, (due_ns(item) - time.time_ns()) / 1e9)):
                return False
        if stop.is_set():
            return False
        publish(item)
        if due_ns is None and flush is not None and n % batch == 0:
            flush()
    if flush is not None:
        flush()
    return True


def wait_for(predicate: Callable[[], bool], stop: threading.Event, interval: float = 0.01) -> bool:
    """Poll until ``predicate`` holds; False if stopped first."""
    while not predicate():
        if stop.wait(interval):
            return False
    return True
