"""Cloud cover per frame: what an on-board consumer acts on (keep, discard, re-task).

A frame is ``frame_lines`` consecutive mask lines of one acquisition; a reset of the segmenter's
state (a new scene, a stamp gap, a width change) closes the frame early, so a frame never mixes
two pieces of ground.  Phi-Sat-1's detector discarded frames above 70 % cloud.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    first_stamp_ns: int
    lines: int
    cloud_pixels: int
    valid_pixels: int

    @property
    def cloud_fraction(self) -> float:
        return self.cloud_pixels / self.valid_pixels if self.valid_pixels else float("nan")


class CloudCover:
    """Counts cloud pixels line by line; ``add`` returns the frame it completes, if any."""

    def __init__(self, frame_lines: int) -> None:
        if frame_lines < 1:
            raise ValueError(f"frame_lines must be at least 1, got {frame_lines}")
        self.frame_lines = frame_lines
        self._start: int | None = None
        self._lines = self._cloud = self._valid = 0

    def add(self, stamp_ns: int, cloud: np.ndarray) -> Frame | None:
        if self._start is None:
            self._start = stamp_ns
        self._lines += 1
        self._cloud += int(np.count_nonzero(cloud))
        self._valid += cloud.size
        return self.close() if self._lines >= self.frame_lines else None

    def close(self) -> Frame | None:
        """End the current frame now (scene marker, reset); None when it holds no line."""
        if self._start is None:
            return None
        frame = Frame(self._start, self._lines, self._cloud, self._valid)
        self._start, self._lines, self._cloud, self._valid = None, 0, 0, 0
        return frame
