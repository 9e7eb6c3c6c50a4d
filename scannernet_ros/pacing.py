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
        if due_ns is not None and not wait_until_ns(due_ns(item), stop):
            return False
        if stop.is_set():
            return False
        publish(item)
        if due_ns is None and flush is not None and n % batch == 0:
            flush()
    if flush is not None:
        flush()
    return True


SPIN_NS = 500_000  # the last half millisecond is spun (yielding), not slept: sleeps wake late


def wait_until_ns(deadline_ns: int, stop: threading.Event) -> bool:
    """Return at ``deadline_ns`` (wall clock) within microseconds; False if stopped first."""
    remaining = deadline_ns - time.time_ns()
    if remaining > SPIN_NS and stop.wait((remaining - SPIN_NS) / 1e9):
        return False
    while time.time_ns() < deadline_ns:
        time.sleep(0)  # yields the GIL to the process's other threads
    return not stop.is_set()


def poll_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll until ``predicate`` holds or ``timeout`` seconds pass; whether it holds in the end."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def wait_for(predicate: Callable[[], bool], stop: threading.Event, interval: float = 0.01) -> bool:
    """Poll until ``predicate`` holds; False if stopped first."""
    while not predicate():
        if stop.wait(interval):
            return False
    return True
