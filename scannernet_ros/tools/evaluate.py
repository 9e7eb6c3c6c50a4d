"""Offline evaluation, running each model exactly as it runs on board.

Streaming models go line by line through :class:`LineSegmenter` (state reset at each patch or
scene); C-FCN and C-UNet++ see whole patches.  Scores under both 38-Cloud protocols (pooled and
per-scene mean), plus parameters and memory.  Outputs: JSON, a Markdown table, PNG panels in the
manner of the paper's Figure 3 and an IoU-versus-memory plot in the manner of its Figure 2.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..learning.datasets import Sample, band_index, load_all
from ..metrics import Breakdown, Calibration, Evaluation, FrameCover
from ..learning.models import count_parameters, resolve_device, state_bytes_per_pixel
from ..normalise import Normaliser
from ..render import display_rgb, mask_rgb, save_panels
from ..scenes import BANDS
from ..streaming import LineSegmenter
from ..atomic import atomic_write
from ..weights import load_model, resolve_model_path


class Predictor:
    """One model, run the way the segmenter node (or a whole-image pipeline) would run it."""

    def __init__(self, model: str, device: torch.device) -> None:
        self.path = resolve_model_path(model)
        self.net, self.info = load_model(self.path, device)
        self.name = model
        self.device = device
        self.index = [BANDS.index(b) for b in self.info.input.bands]
        self.segmenter = LineSegmenter(self.net, self.info, device, reset_gap_lines=0) if self.net.streams else None

    def probabilities(self, sample: Sample) -> np.ndarray:
        samples = sample.reflectance[self.index]
        if self.segmenter is not None:
            self.segmenter.reset("scene")
            return self.segmenter.segment_image(samples, "float")
        x = torch.from_numpy(Normaliser(self.info.input)(samples.copy(), "float"))[None].to(self.device)
        with torch.inference_mode():
            return torch.sigmoid(self.net(x))[0, 0].float().cpu().numpy()


@dataclass
class Tally:
    """Everything scored at one decision threshold."""
    evaluation: Evaluation
    breakdown: Breakdown
    cover: FrameCover

    def report(self) -> dict:
        return {**self.evaluation.report(), "breakdown": self.breakdown.report(), "cover": self.cover.report()}


def score_samples(predictor: Predictor, samples: list[Sample], thresholds: tuple[float, ...] = (0.5,),
                  keep=None, frame_lines: int = 384, discard_above: float = 0.7
                  ) -> tuple[dict[float, Tally], Calibration]:
    """One model over ``samples``, each run once: both protocols' confusion matrices, the failure
    breakdown and the per-frame cloud cover at every decision threshold in ``thresholds``, and the
    calibration of its probabilities.  ``keep(i, mask)`` sees each predicted mask at the first
    threshold (for figures)."""
    tallies = {t: Tally(Evaluation(), Breakdown(), FrameCover(frame_lines, discard_above)) for t in thresholds}
    calibration = Calibration()
    for i, sample in enumerate(samples):
        prob = predictor.probabilities(sample)
        calibration.add(prob, sample.mask)
        for t, tally in tallies.items():
            pred = prob >= t
            tally.evaluation.add(sample.scene, pred, sample.mask)
            tally.breakdown.add(pred, sample.mask, sample.thin)
            tally.cover.add(pred, sample.mask)
            if keep is not None and t == thresholds[0]:
                keep(i, pred)
    return tallies, calibration


def evaluate(models: list[str], data: list[str], out: Path, threshold: float = 0.5, device: str = "cpu",
             panels: int = 4, nonempty_only: bool = False, log=print, frame_lines: int = 384,
             discard_above: float = 0.7) -> dict:
    samples = load_all(data, nonempty_only)
    models = list(dict.fromkeys(["threshold", *models]))  # every table carries the reference
    predictors = [Predictor(m, resolve_device(device)) for m in models]
    for p in predictors:   # a model's bands must be in every sample before anything is scored
        band_index(samples, p.info.input.bands)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results, shown = {}, {}
    for p in predictors:
        tallies, calibration = score_samples(
            p, samples, (threshold,),
            keep=lambda i, pred: shown.setdefault(i, []).append(pred) if i < panels else None,
            frame_lines=frame_lines, discard_above=discard_above)
        report = tallies[threshold].report()
        results[p.name] = {
            "architecture": p.info.architecture, "weights": str(p.path), "trained": p.info.trained,
            "parameters": count_parameters(p.net), "state_bytes_per_pixel": state_bytes_per_pixel(p.net),
            "forward_pass_mb": forward_pass_mb(p.info.architecture),
            "runs": "per line" if p.segmenter is not None else "whole image",
            **report, "calibration": calibration.report(),
        }
        cover = report["cover"]
        log(f"{p.name}: pooled IoU {report['pooled']['iou']:.4f}, per-scene IoU {report['per_scene_mean']['iou']:.4f}, "
            f"cloud-cover error per frame {cover['cover_mae']:.3f} ({cover['frames']} frames, discard decision "
            f"right in {cover['discard_agreement']:.0%})")
    summary = {"threshold": threshold, "frame_lines": frame_lines, "discard_above": discard_above, "data": data,
               "samples": len(samples), "scenes": len({s.scene for s in samples}), "models": results}
    atomic_write(out / "evaluation.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1, default=float)))
    atomic_write(out / "evaluation.md", lambda tmp: Path(tmp).write_text(markdown(summary)))
    for i, preds in shown.items():
        s = samples[i]
        save_panels(out / f"panel_{i:02d}_{s.name}.png", [display_rgb(s.reflectance), mask_rgb(s.mask)]
                    + [mask_rgb(p.astype(np.uint8)) for p in preds])
    try:
        plot_iou_memory(summary, out / "iou_vs_memory.png")
    except ImportError:
        pass
    return summary


def forward_pass_mb(architecture: str) -> float | None:
    """torchinfo's estimate as in the paper's Table 2 (one line or one 384x384 image); None without torchinfo."""
    try:
        from ..learning.memory import torchinfo_mb
        return torchinfo_mb(architecture)
    except ImportError:
        return None


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.2f}"


def markdown(summary: dict) -> str:
    lines = [f"Threshold {summary['threshold']}, {summary['samples']} images from {summary['scenes']} scenes "
             f"({', '.join(summary['data'])}).", "",
             "| model | params | memory MB | runs | protocol | IoU | F1 | Acc. | Prec. | Rec. | Spec. |",
             "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in summary["models"].items():
        mb = "n/a" if r["forward_pass_mb"] is None else f"{r['forward_pass_mb']:.2f}"
        for protocol, label in (("pooled", "pooled pixels"), ("per_scene_mean", "per-scene mean")):
            s = r[protocol]
            lines.append(f"| {name} | {r['parameters']:,} | {mb} | {r['runs']} | {label} | " + " | ".join(
                _pct(s[k]) for k in ("iou", "f1", "accuracy", "precision", "recall", "specificity")) + " |")
    lines += ["", "Per-scene means are over scenes with cloud; cloud-free scenes are scored alike for every "
              "model, by their false-positive rate. Frames are the segmenter's cloud_cover frames "
              f"({summary.get('frame_lines', 384)} lines, closed at each scene's end), discard above "
              f"{summary.get('discard_above', 0.7):g}. All figures x100."]
    lines += ["", "| model | per-scene IoU, every scene (cloud-free: 1 if nothing called cloud) | cloud-cover error "
              "per frame (MAE) | discard decision right | frames | ECE | Brier |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in summary["models"].items():
        c, cal = r["cover"], r["calibration"]
        lines.append(f"| {name} | {_pct(r['per_scene_mean']['iou_all'])} | {_pct(c['cover_mae'])} | "
                     f"{_pct(c['discard_agreement'])} | {c['frames']} | {_pct(cal['ece'])} | {_pct(cal['brier'])} |")
    lines += ["", "| model | cloud-free scenes | FP rate there | recall thin | recall thick | errors within 3 px of an edge "
              "| FP rate, first 16 rows | FP rate, other rows |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in summary["models"].items():
        s, b = r["per_scene_mean"], r["breakdown"]
        lines.append(f"| {name} | {s['cloud_free_scenes']} | {_pct(s['cloud_free_fp_rate'])} | " + " | ".join(
            _pct(b[k]) for k in ("recall_thin", "recall_thick", "errors_near_edge", "fp_rate_first_16_rows",
                                 "fp_rate_other_rows")) + " |")
    return "\n".join(lines) + "\n"


def plot_iou_memory(summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, r in summary["models"].items():
        mb = r["forward_pass_mb"]
        if mb is None:
            continue
        ax.scatter(mb, 100 * r["pooled"]["iou"])
        ax.annotate(name, (mb, 100 * r["pooled"]["iou"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xscale="log", xlabel="forward-pass memory, torchinfo (MB)", ylabel="IoU, pooled (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=["scannernet", "scannernet_small"],
                   help="registry names (shipped weights) or .safetensors paths; the shipped threshold "
                        "reference is always added")
    p.add_argument("--data", nargs="+", required=True, help="bags, 38-Cloud split, L8 Biome folder, synthetic:N")
    p.add_argument("--threshold", type=float, default=0.5, help="cloud probability at which a pixel is cloud")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--panels", type=int, default=4, help="how many images to draw as PNG panels")
    p.add_argument("--nonempty-only", action="store_true", help="38-Cloud: only the official non-empty patches")
    p.add_argument("--frame-lines", type=int, default=384,
                   help="lines per cloud-cover frame (the segmenter's frame_lines) for the per-frame cover error")
    p.add_argument("--discard-above", type=float, default=0.7,
                   help="cloud fraction above which a frame is discarded (the segmenter's discard_above)")
    p.add_argument("--out", default="out/evaluation", help="folder for evaluation.json, evaluation.md and figures")
