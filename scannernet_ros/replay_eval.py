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
    """Pairs masks with ground truth by stamp and scores each pair once both scenes and lines are known.

    At most ``max_pending`` lines wait on each side: beyond that the oldest is given up (a lost
    mask, or a mask without truth), so memory stays bounded however long the replay.
    """

    def __init__(self, max_pending: int = 20_000) -> None:
        self.max_pending = max_pending
        self.given_up_truth = 0
        self.given_up_masks = 0
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
        if len(self.masks) > self.max_pending:
            del self.masks[next(iter(self.masks))]
            self.given_up_masks += 1

    def add_truth(self, stamp_ns: int, gt_mono8: np.ndarray) -> None:
        self.truth[stamp_ns] = truth_from_mono8(gt_mono8)
        self._pair(stamp_ns)
        if len(self.truth) > self.max_pending:
            del self.truth[next(iter(self.truth))]
            self.given_up_truth += 1

    def _pair(self, stamp_ns: int) -> None:
        if stamp_ns in self.masks and stamp_ns in self.truth:
            mask, truth = self.masks.pop(stamp_ns), self.truth.pop(stamp_ns)
            if mask.shape != truth.shape:
                self.width_mismatch += 1
                return
            self.evaluation.add(self.scene_of(stamp_ns), mask, truth)
            self.paired += 1

    def report(self, expected_lines: int | None = None) -> dict:
        """Scores and a status; ``expected_lines`` (ground-truth lines the player sent) makes a
        short or empty replay a FAIL with its reason."""
        lost, unmatched = len(self.truth) + self.given_up_truth, len(self.masks) + self.given_up_masks
        reasons = []
        if lost:
            reasons.append(f"{lost} ground-truth lines got no mask")
        if unmatched:
            reasons.append(f"{unmatched} masks got no ground truth")
        if self.width_mismatch:
            reasons.append(f"{self.width_mismatch} masks differ in width from their truth")
        if self.paired == 0:
            reasons.append("no line was scored")
        if expected_lines is not None and self.paired < expected_lines:
            reasons.append(f"scored {self.paired} of the {expected_lines} lines replayed")
        return {**self.evaluation.report(), "lines_paired": self.paired, "lost_masks": lost,
                "masks_without_truth": unmatched, "width_mismatch": self.width_mismatch,
                "status": "FAIL" if reasons else "ok", "reasons": reasons}
