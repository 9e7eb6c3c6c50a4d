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
        # Every scene counts here, cloud-free ones too: IoU 1 when nothing is called cloud, 0 when
        # anything is.  Unseen sets are full of nearly clear scenes; this is what over-calling costs there.
        every = [1.0 if not (cm.tp + cm.fp + cm.fn) else cm.tp / (cm.tp + cm.fp + cm.fn) for cm in scenes]
        out["iou_all"] = float(np.mean(every)) if every else math.nan
        out["iou_all_scenes"] = len(every)
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


class Calibration:
    """Whether a probability of 0.7 means cloud 70 % of the time: a reliability curve over
    ``bins`` equal-width bins, the expected calibration error and the Brier score, over valid pixels."""

    def __init__(self, bins: int = 10) -> None:
        self.bins = bins
        self.count = np.zeros(bins, np.int64)
        self.prob_sum = np.zeros(bins)
        self.cloud = np.zeros(bins, np.int64)
        self.squared_error = 0.0

    def add(self, prob: np.ndarray, truth: np.ndarray) -> None:
        valid = truth != NO_DATA
        p = np.clip(np.asarray(prob, np.float64)[valid], 0.0, 1.0)
        y = truth[valid] == 1
        index = np.minimum((p * self.bins).astype(np.int64), self.bins - 1)
        self.count += np.bincount(index, minlength=self.bins)
        self.prob_sum += np.bincount(index, weights=p, minlength=self.bins)
        self.cloud += np.bincount(index, weights=y, minlength=self.bins).astype(np.int64)
        self.squared_error += float(np.sum((p - y) ** 2))

    def report(self) -> dict:
        total = int(self.count.sum())
        if not total:
            return {"ece": math.nan, "brier": math.nan, "pixels": 0, "reliability": []}
        used = self.count > 0
        mean_p = np.divide(self.prob_sum, self.count, out=np.zeros(self.bins), where=used)
        freq = np.divide(self.cloud, self.count, out=np.zeros(self.bins), where=used)
        ece = float(np.sum(self.count / total * np.abs(mean_p - freq)))
        curve = [{"bin": [i / self.bins, (i + 1) / self.bins], "pixels": int(self.count[i]),
                  "mean_probability": float(mean_p[i]), "cloud_fraction": float(freq[i])}
                 for i in range(self.bins) if used[i]]
        return {"ece": ece, "brier": self.squared_error / total, "pixels": total, "reliability": curve}


class FrameCover:
    """The on-board figure: each frame's cloud fraction (``frame_lines`` rows of a scene, the last
    one shorter, as the segmenter's cloud_cover closes a frame at a reset), predicted against true.
    Mean absolute error of the fraction, and the share of frames whose discard decision
    (fraction above ``discard_above``) agrees with the truth's."""

    def __init__(self, frame_lines: int = 384, discard_above: float = 0.7) -> None:
        if frame_lines < 1:
            raise ValueError(f"frame_lines must be at least 1, got {frame_lines}")
        self.frame_lines, self.discard_above = frame_lines, discard_above
        self.errors: list[float] = []
        self.agree = 0

    def add(self, pred: np.ndarray, truth: np.ndarray) -> None:
        for r in range(0, truth.shape[0], self.frame_lines):
            t = truth[r:r + self.frame_lines]
            valid = t != NO_DATA
            if not valid.any():
                continue
            p = np.asarray(pred[r:r + self.frame_lines], bool)[valid]
            true_fraction = float(np.mean(t[valid] == 1))
            fraction = float(np.mean(p))
            self.errors.append(abs(fraction - true_fraction))
            self.agree += (fraction > self.discard_above) == (true_fraction > self.discard_above)

    def report(self) -> dict:
        n = len(self.errors)
        return {"frames": n, "frame_lines": self.frame_lines, "discard_above": self.discard_above,
                "cover_mae": float(np.mean(self.errors)) if n else math.nan,
                "discard_agreement": self.agree / n if n else math.nan}
