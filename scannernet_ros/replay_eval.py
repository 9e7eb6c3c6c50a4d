"""Scoring mask lines against ground-truth lines as they arrive, paired by stamp (no ROS).

Lines may arrive in any order and on either topic first; scene markers (name + first stamp) may
arrive late.  Attribution to scenes is by stamp, so the result equals the offline evaluation of
the same bags.  A ground-truth line that never gets its mask is a lost mask: a failure.
"""
from __future__ import annotations

import bisect

import numpy as np

from .camera import truth_from_mono8
from .metrics import Evaluation


class StampPairing:
    """Pairs masks with ground truth by stamp and scores each pair once both scenes and lines are known."""

    def __init__(self) -> None:
        self.evaluation = Evaluation()
        self.scene_starts: list[int] = []
        self.scene_names: list[str] = []
        self.masks: dict[int, np.ndarray] = {}
        self.truth: dict[int, np.ndarray] = {}
        self.paired = 0
        self.width_mismatch = 0

    def add_scene(self, first_stamp_ns: int, name: str) -> None:
        i = bisect.bisect(self.scene_starts, first_stamp_ns)
        self.scene_starts.insert(i, first_stamp_ns)
        self.scene_names.insert(i, name)

    def scene_of(self, stamp_ns: int) -> str:
        i = bisect.bisect(self.scene_starts, stamp_ns) - 1
        return self.scene_names[i] if i >= 0 else "unnamed"

    def add_mask(self, stamp_ns: int, mask_mono8: np.ndarray) -> None:
        self.masks[stamp_ns] = mask_mono8 > 127
        self._pair(stamp_ns)

    def add_truth(self, stamp_ns: int, gt_mono8: np.ndarray) -> None:
        self.truth[stamp_ns] = truth_from_mono8(gt_mono8)
        self._pair(stamp_ns)

    def _pair(self, stamp_ns: int) -> None:
        if stamp_ns in self.masks and stamp_ns in self.truth:
            mask, truth = self.masks.pop(stamp_ns), self.truth.pop(stamp_ns)
            if mask.shape != truth.shape:
                self.width_mismatch += 1
                return
            self.evaluation.add(self.scene_of(stamp_ns), mask, truth)
            self.paired += 1

    def report(self) -> dict:
        lost, unmatched = len(self.truth), len(self.masks)
        ok = lost == 0 and unmatched == 0 and self.width_mismatch == 0
        return {**self.evaluation.report(), "lines_paired": self.paired, "lost_masks": lost,
                "masks_without_truth": unmatched, "width_mismatch": self.width_mismatch,
                "status": "ok" if ok else "FAIL"}
