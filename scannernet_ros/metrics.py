"""Confusion matrices and the two 38-Cloud protocols.

* pooled: one confusion matrix over every pixel of every image, then the scores (the ScannerNet
  paper's Table 3 numbers are of this kind);
* per-scene: one confusion matrix per scene, scores per scene, then their unweighted mean (the
  dataset's official evaluation.m).

Pixels marked no data (mask value 255) count nowhere.

Per-scene means treat every method alike: IoU, F1, precision and recall are averaged over the
scenes whose truth holds cloud (the same scenes for every method; a cloudy scene where a method
predicts no cloud has precision 0, not "undefined"); accuracy and specificity over every scene
with valid pixels.  Cloud-free scenes are reported on their own: how many, and the false-positive
rate over their pixels.  So no method is scored 0 on a clear scene that another one skips.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

NO_DATA = 255
SCORES = ("iou", "f1", "accuracy", "precision", "recall", "specificity")
CLOUD_SCORES = ("iou", "f1", "precision", "recall")  # defined per scene only where there is cloud
EDGE_PX = 3          # "near a cloud edge": within this many pixels (Chebyshev) of a cloud/clear boundary
WARMUP_ROWS = 16     # the first rows of a scene, where a recurrent state starts from zeros


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
        scenes = [cm for cm in self.per_scene.values() if cm.pixels]
        cloudy = [cm for cm in scenes if cm.tp + cm.fn]
        out = {}
        for name in SCORES:
            among = cloudy if name in CLOUD_SCORES else scenes
            values = [cm.scores()[name] for cm in among]
            if name == "precision":
                values = [0.0 if math.isnan(v) else v for v in values]  # cloud missed entirely
            defined = [v for v in values if not math.isnan(v)]
            out[name] = float(np.mean(defined)) if defined else math.nan
            out[f"{name}_scenes"] = len(defined)
        clear = Confusion()
        for cm in scenes:
            if not cm.tp + cm.fn:
                clear += cm
        out["cloud_free_scenes"] = len(scenes) - len(cloudy)
        out["cloud_free_fp_rate"] = clear.fp / clear.pixels if clear.pixels else math.nan
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


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1)^2 square, separably, without scipy."""
    out = mask.copy()
    for axis in (0, 1):
        src, out = out, out.copy()
        n = src.shape[axis]
        for d in range(1, r + 1):
            if d >= n:
                break
            lo = [slice(None)] * 2
            hi = [slice(None)] * 2
            lo[axis], hi[axis] = slice(0, n - d), slice(d, n)
            out[tuple(lo)] |= src[tuple(hi)]
            out[tuple(hi)] |= src[tuple(lo)]
    return out


def edge_band(truth: np.ndarray, r: int = EDGE_PX) -> np.ndarray:
    """Pixels within ``r`` px of a boundary between cloud and clear in the truth."""
    cloud = truth == 1
    clear = truth == 0
    return _dilate(cloud, r) & _dilate(clear, r)


class Breakdown:
    """Where a model fails, beyond one IoU: thin versus thick cloud (where the truth tells them
    apart), errors near cloud edges, and false positives in a scene's first rows (recurrent
    warm-up) against the rest.  ``add`` takes one whole scene or patch, top row first."""

    def __init__(self) -> None:
        self.counts = {k: 0 for k in ("thin", "thin_hit", "thick", "thick_hit", "errors", "edge_errors",
                                      "edge_pixels", "warmup_clear", "warmup_fp", "rest_clear", "rest_fp")}

    def add(self, pred: np.ndarray, truth: np.ndarray, thin: np.ndarray | None = None) -> None:
        c = self.counts
        pred = np.asarray(pred, bool)
        valid = truth != NO_DATA
        cloud, clear = (truth == 1) & valid, (truth == 0) & valid
        if thin is not None:
            thin = thin & cloud
            c["thin"] += int(thin.sum())
            c["thin_hit"] += int((thin & pred).sum())
            thick = cloud & ~thin
            c["thick"] += int(thick.sum())
            c["thick_hit"] += int((thick & pred).sum())
        wrong = valid & (pred != cloud)
        band = edge_band(truth) & valid
        c["errors"] += int(wrong.sum())
        c["edge_errors"] += int((wrong & band).sum())
        c["edge_pixels"] += int(band.sum())
        fp = clear & pred
        c["warmup_clear"] += int(clear[:WARMUP_ROWS].sum())
        c["warmup_fp"] += int(fp[:WARMUP_ROWS].sum())
        c["rest_clear"] += int(clear[WARMUP_ROWS:].sum())
        c["rest_fp"] += int(fp[WARMUP_ROWS:].sum())

    def report(self) -> dict[str, float]:
        c = self.counts
        div = lambda a, b: c[a] / c[b] if c[b] else math.nan  # noqa: E731
        return {
            "recall_thin": div("thin_hit", "thin"), "recall_thick": div("thick_hit", "thick"),
            "errors_near_edge": div("edge_errors", "errors"),          # share of all errors
            "error_rate_near_edge": div("edge_errors", "edge_pixels"),
            f"fp_rate_first_{WARMUP_ROWS}_rows": div("warmup_fp", "warmup_clear"),
            "fp_rate_other_rows": div("rest_fp", "rest_clear"),
            **{k: v for k, v in c.items()},
        }
