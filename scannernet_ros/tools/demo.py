"""``scannernet demo``: the whole on-board pipeline in one process over real rclpy.

Camera, segmenter and waterfall run as they would under ``ros2 launch``, plus a recorder that
listens like any downstream consumer.  At the end: lines in and out, latency percentiles, the
model's IoU against the scene's ground truth beside the brightness threshold's on the same scene,
and a PNG (input | ground truth | mask).  The default scene is real: a Landsat 8 patch shipped with
the package (scenes/demo/README.md says where it comes from and that the shipped weights trained
on it); ``--source synthetic`` is the procedural scene.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.parameter import Parameter

from ..metrics import confusion
from ..pacing import poll_until
from ..render import display_rgb, mask_rgb, save_panels
from ..scenes import open_scene
from ..nodes.pushbroom_camera import PushbroomCamera
from ..nodes.recorder import Recorder
from ..nodes.ros_common import NodeThreads
from ..nodes.segmenter import STATUS_NAME, Segmenter
from ..nodes.waterfall import WaterfallNode


def params(**values) -> list[Parameter]:
    return [Parameter(k, value=v) for k, v in values.items()]


def run(args: argparse.Namespace) -> int:
    scene = open_scene(args.source, width=args.width, length=args.length, seed=args.seed)
    lines = scene.length
    rclpy.init()
    try:
        ns = "pushbroom"  # the launch file's namespace: topics match the bags' /pushbroom/...
        segmenter = Segmenter(namespace=ns, parameter_overrides=params(
            model=args.model, device=args.device, line_rate_hz=args.line_rate or 225.0))
        recorder = Recorder(namespace=ns)
        waterfall = WaterfallNode(namespace=ns)
        listeners = NodeThreads([segmenter, recorder, waterfall])
        poll_until(recorder.connected, 10)  # the first mask lines must not go unheard
        camera = PushbroomCamera(namespace=ns, parameter_overrides=params(
            source=args.source, width=args.width, length=args.length, seed=args.seed,
            encoding=args.encoding, line_rate_hz=float(args.line_rate),
            wait_for_subscribers=2))  # segmenter and waterfall
        nodes = NodeThreads([camera])
        try:
            start = time.monotonic()
            budget = 30.0 + (lines / args.line_rate * 3 if args.line_rate else lines * 0.01)
            tty = sys.stdout.isatty()
            while not recorder.wait_for(lines, 0.25 if tty else 2.0):
                print(f"  lines in {segmenter.core.counters.lines_in:6d} / {lines}   "
                      f"mask lines out {len(recorder.stamps):6d}", end="\r" if tty else "\n", flush=True)
                if time.monotonic() - start > budget:
                    print(f"\n  stopped waiting after {budget:.0f} s", file=sys.stderr)
                    break
            elapsed = time.monotonic() - start
            time.sleep(args.diagnostics_wait)
        finally:
            nodes.shutdown()
            listeners.shutdown()
    finally:
        rclpy.try_shutdown()
    print(f"  lines in {segmenter.core.counters.lines_in:6d} / {lines}   mask lines out {len(recorder.stamps):6d}")
    return summarise(args, scene, segmenter, recorder, elapsed)


def threshold_mask(scene, rows: int) -> np.ndarray:
    """The shipped brightness-threshold reference over the same rows, as the segmenter runs it."""
    from ..streaming import LineSegmenter
    reference = LineSegmenter.from_file("threshold")
    from ..scenes import BANDS
    rho, _ = scene.rows(0, rows)
    return reference.segment_image(rho[[BANDS.index(b) for b in reference.bands]], "float") >= 0.5


def summarise(args, scene, segmenter, recorder, elapsed: float) -> int:
    c = segmenter.core.counters
    lat = np.asarray(recorder.latency_ns) / 1e6
    compute = recorder.status_values(STATUS_NAME)
    print(f"\nscene {scene.name} ({scene.width} px x {scene.length} lines) through {args.model} "
          f"in {elapsed:.1f} s; stepper {segmenter.core.step_in_use()}")
    print(f"  lines in {c.lines_in}, out {c.lines_out}, received downstream {len(recorder.stamps)}, "
          f"rejected {sum(c.rejected.values())}, dropped {c.dropped}, resets {sum(c.resets.values())}")
    if len(lat):
        print(f"  end-to-end latency (mask received - line stamp): p50 {np.percentile(lat, 50):.2f} ms, "
              f"p99 {np.percentile(lat, 99):.2f} ms, max {lat.max():.2f} ms")
    if compute:
        print(f"  compute per line (last diagnostics window): p50 {compute['compute latency p50 ms']} ms, "
              f"p99 {compute['compute latency p99 ms']} ms")
    if recorder.cover:
        fractions = ", ".join(f"{100 * float(f['cloud fraction']):.0f} %" for f in recorder.cover[:8])
        flagged = sum(f["discard"] == "true" for f in recorder.cover)
        print(f"  cloud_cover: {len(recorder.cover)} frames of {recorder.cover[0]['lines']} lines: {fractions}"
              f"{' ...' if len(recorder.cover) > 8 else ''}; {flagged} flagged for discard")
    stamps = sorted(recorder.masks)
    if not stamps:
        print("  no mask lines received", file=sys.stderr)
        return 1
    pred = np.stack([recorder.masks[s] for s in stamps]) > 127
    rho, truth = scene.rows(0, len(stamps))
    panels = [display_rgb(rho)]
    if truth is not None:
        cm = confusion(pred, truth)
        s = cm.scores()
        reference = confusion(threshold_mask(scene, len(stamps)), truth).scores()
        print(f"  against ground truth ({cm.pixels:,} pixels; IoU 1 is a perfect mask):")
        print(f"    {args.model:<22} IoU {s['iou']:.3f}  F1 {s['f1']:.3f}  precision {s['precision']:.3f}  "
              f"recall {s['recall']:.3f}")
        print(f"    {'brightness threshold':<22} IoU {reference['iou']:.3f}  F1 {reference['f1']:.3f}  "
              f"precision {reference['precision']:.3f}  recall {reference['recall']:.3f}  "
              "(the reference: cloud where mean R, G, B reflectance > t)")
        if args.source == "demo":
            print("    this Landsat 8 patch is in the shipped weights' training data: it shows the pipeline on real "
                  "imagery;\n    accuracy on unseen scenes is the cross-validated table in the README")
        panels.append(mask_rgb(truth))
    panels.append(mask_rgb(pred.astype(np.uint8)))
    path = save_panels(Path(args.out) / "demo.png", panels)
    print(f"  wrote {path}  (input | ground truth | {args.model} mask)")
    return 0 if len(recorder.stamps) == c.lines_out else 1
