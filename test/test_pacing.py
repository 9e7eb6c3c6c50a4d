import threading
import time

from scannernet_ros.pacing import run_paced, wait_until_ns


def test_paced_items_are_published_on_time_and_in_order():
    start = time.time_ns() + 20_000_000
    sent = []
    ok = run_paced(range(20), lambda i: sent.append((i, time.time_ns())), threading.Event(),
                   due_ns=lambda i: start + i * 2_000_000)
    assert ok and [i for i, _ in sent] == list(range(20))
    lateness_us = [(t - (start + i * 2_000_000)) / 1e3 for i, t in sent]
    assert min(lateness_us) >= 0  # never early


def test_unpaced_publishing_flushes_every_batch():
    flushes = []
    run_paced(range(250), lambda i: None, threading.Event(), flush=lambda: flushes.append(1), batch=100)
    assert len(flushes) == 3  # after 100, after 200, and at the end


def test_stop_interrupts_a_wait():
    stop = threading.Event()
    threading.Timer(0.05, stop.set).start()
    t0 = time.monotonic()
    assert not wait_until_ns(time.time_ns() + 5_000_000_000, stop)
    assert time.monotonic() - t0 < 1.0
