"""A rolling picture of the last N lines with the cloud mask drawn over them (no ROS)."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .render import overlay


class Waterfall:
    """Rows arrive as display RGB keyed by stamp; masks arrive later under the same stamp."""

    def __init__(self, rows: int) -> None:
        self.capacity = rows
        self._rows: OrderedDict[int, np.ndarray] = OrderedDict()

    def add_line(self, stamp_ns: int, rgb: np.ndarray) -> None:
        if self._rows and rgb.shape != next(iter(self._rows.values())).shape:
            self._rows.clear()  # width changed: a new picture
        self._rows[stamp_ns] = rgb
        while len(self._rows) > self.capacity:
            self._rows.popitem(last=False)

    def add_mask(self, stamp_ns: int, cloud: np.ndarray) -> bool:
        """Tint the row with this stamp; False when that row is not (or no longer) shown."""
        row = self._rows.get(stamp_ns)
        if row is None or row.shape[0] != cloud.shape[0]:
            return False
        self._rows[stamp_ns] = overlay(row, cloud)
        return True

    def image(self) -> np.ndarray | None:
        """``(rows, width, 3)`` uint8, newest line at the bottom; None before the first line."""
        return np.stack(list(self._rows.values())) if self._rows else None
