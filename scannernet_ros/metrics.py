"""Confusion matrices and the two 38-Cloud protocols.

* pooled: one confusion matrix over every pixel of every image, then the scores (the ScannerNet
  paper's Table 3 numbers are of this kind);
* per-scene: one confusion matrix per scene, scores per scene, then their unweighted mean (the
  dataset's official evaluation.m).

Pixels marked no data (mask value 255) count nowhere.  A score whose denominator is zero is NaN
and left out of per-scene means; how many scenes contributed is reported beside it.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

NO_DATA = 255
SCORES = ("iou", "f1", "accuracy", "precision", "recall", "specificity")


@dataclass
class Confusion:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __iadd__(self, other: "Confusion") -> "Confusion":
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.tn += other.tn
        return self

    @property
    def pixels(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    def scores(self) -> dict[str, float]:
        div = lambda a, b: a / b if b else math.nan  # noqa: E731
        precision = div(self.tp, self.tp + self.fp)
        recall = div(self.tp, self.tp + self.fn)
        return {
            "iou": div(self.tp, self.tp + self.fp + self.fn),
            "f1": div(2 * self.tp, 2 * self.tp + self.fp + self.fn),
            "accuracy": div(self.tp + self.tn, self.pixels),
            "precision": precision,
            "recall": recall,
            "specificity": div(self.tn, self.tn + self.fp),
        }


def confusion(pred: np.ndarray, truth: np.ndarray) -> Confusion:
    """``pred`` boolean/0-1 cloud, ``truth`` 0/1 with NO_DATA excluded."""
    valid = truth != NO_DATA
    p = np.asarray(pred, bool) & valid
    t = (truth == 1) & valid
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t & valid))
    fn = int(np.count_nonzero(~p & t))
    tn = int(np.count_nonzero(valid)) - tp - fp - fn
    return Confusion(tp, fp, fn, tn)


class Evaluation:
    """Accumulates confusion matrices per scene; reports both protocols."""

    def __init__(self) -> None:
        self.per_scene: dict[str, Confusion] = defaultdict(Confusion)

    def add(self, scene: str, pred: np.ndarray, truth: np.ndarray) -> None:
        self.per_scene[scene] += confusion(pred, truth)

    def pooled(self) -> dict[str, float]:
        total = Confusion()
        for cm in self.per_scene.values():
            total += cm
        return total.scores()

    def scene_mean(self) -> dict[str, float]:
        out = {}
        for name in SCORES:
            values = [cm.scores()[name] for cm in self.per_scene.values()]
            defined = [v for v in values if not math.isnan(v)]
            out[name] = float(np.mean(defined)) if defined else math.nan
            out[f"{name}_scenes"] = len(defined)
        return out

    def report(self) -> dict:
        total = Confusion()
        for cm in self.per_scene.values():
            total += cm
        return {
            "pooled": self.pooled(),
            "per_scene_mean": self.scene_mean(),
            "scenes": {k: {**vars(v), **v.scores()} for k, v in sorted(self.per_scene.items())},
            "pixels": total.pixels,
        }
