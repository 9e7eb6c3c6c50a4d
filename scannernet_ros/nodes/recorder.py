"""A listener that keeps every mask (and ground-truth) line it hears, keyed by stamp.

Used by the demo, the tests and the end-to-end benchmark: it measures what a downstream consumer
sees, i.e. arrival order, duplicates, losses and (receive time - stamp) latency.
"""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import Image

from ..codec import ImageFormatError, decode_line
from .ros_common import qos, short_status_name, to_ns


REPORTS_KEPT = 1000  # per status name: minutes of diagnostics, bounded for long runs


class Recorder(Node):

    def __init__(self, name: str = "recorder", mask_topic: str = "mask_line", gt_topic: str | None = "gt_line",
                 keep_lines: bool = True, **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.keep_lines = keep_lines
        self.stamps: list[int] = []
        self.latency_ns: list[int] = []
        self.masks: dict[int, np.ndarray] = {}
        self.truth: dict[int, np.ndarray] = {}
        self.frame_ids: set[str] = set()
        self.statuses: dict[str, object] = {}                   # the latest status of each name
        self.reports: dict[str, deque[dict[str, str]]] = {}     # recent statuses' values, by name
        self.malformed = 0
        self.changed = threading.Condition()
        self.mask_sub = self.create_subscription(Image, mask_topic, self.on_mask, qos("reliable", 0))
        if gt_topic:
            self.create_subscription(Image, gt_topic, self.on_truth, qos("reliable", 0))
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 50)
        self.cover: list[dict[str, str]] = []   # the segmenter's cloud_cover frames, values by key
        self.create_subscription(DiagnosticArray, "cloud_cover", self.on_cover, 100)

    def on_mask(self, msg: Image) -> None:
        received = time.time_ns()
        stamp = to_ns(msg.header.stamp)
        self.latency_ns.append(received - stamp)
        self.frame_ids.add(msg.header.frame_id)
        row = self.row(msg) if self.keep_lines else None
        if row is not None:
            self.masks[stamp] = row
        with self.changed:
            self.stamps.append(stamp)
            self.changed.notify_all()

    def on_truth(self, msg: Image) -> None:
        row = self.row(msg)
        if row is not None:
            self.truth[to_ns(msg.header.stamp)] = row

    def row(self, msg: Image) -> np.ndarray | None:
        """A line's first band through the codec; a malformed one gives None and is counted."""
        try:
            return decode_line(msg).samples[0].copy()
        except ImageFormatError:
            self.malformed += 1
            return None

    def on_cover(self, msg: DiagnosticArray) -> None:
        self.cover += [{kv.key: kv.value for kv in status.values} for status in msg.status]

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        """Statuses by name; those of nodes in this recorder's namespace also by their short name."""
        for status in msg.status:
            short = short_status_name(status.name, self.get_namespace())
            for name in (status.name, short) if short else (status.name,):
                self.statuses[name] = status
                self.reports.setdefault(name, deque(maxlen=REPORTS_KEPT)).append({kv.key: kv.value for kv in status.values})

    def connected(self) -> bool:
        """True once a publisher of the mask topic is matched (not merely discovered)."""
        return self.mask_sub.get_publisher_count() >= 1

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block until ``count`` mask lines arrived or ``timeout`` seconds passed."""
        with self.changed:
            return self.changed.wait_for(lambda: len(self.stamps) >= count, timeout)

    def status_values(self, name: str) -> dict[str, str]:
        reports = self.reports.get(name)
        return dict(reports[-1]) if reports else {}
