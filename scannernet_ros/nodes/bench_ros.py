"""End-to-end runs for ``scannernet bench``: camera and segmenter as separate processes (the
installed executables), observed from a third process that records when each scanline and each
mask line arrives."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rclpy
from sensor_msgs.msg import Image

from ..camera import encode_rows
from ..pacing import poll_until
from ..scenes.synthetic import SyntheticScene
from .recorder import Recorder
from .ros_common import NodeThreads, qos, to_ns


class Observer(Recorder):
    """A Recorder that also notes when each scanline arrived."""

    def __init__(self, namespace: str) -> None:
        super().__init__("bench_observer", gt_topic=None, keep_lines=False, namespace=namespace)
        self.scan_seen: dict[int, int] = {}
        self.mask_seen: dict[int, int] = {}
        self.create_subscription(Image, "scanline", self.on_scan, qos("reliable", 0))

    def on_scan(self, msg: Image) -> None:
        self.scan_seen[to_ns(msg.header.stamp)] = time.time_ns()

    def on_mask(self, msg: Image) -> None:
        self.mask_seen[to_ns(msg.header.stamp)] = time.time_ns()
        super().on_mask(msg)


def executable(name: str) -> str:
    """The installed console script, as ``ros2 run`` would start it: beside this Python, else on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def _start(name: str, ns: str, **params) -> subprocess.Popen:
    args = [executable(name), "--ros-args", "-r", f"__ns:=/{ns}", "--log-level", "warn"]
    for k, v in params.items():
        args += ["-p", f"{k}:={v}"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        if p is not None:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def _rendered_scene(width: int, lines: int, folder: str) -> str:
    """The scene written once as uint16 digital numbers, so that the camera only publishes: it
    synthesises nothing while lines are timed."""
    path = Path(folder) / f"swath_{width}x{lines}.npy"
    scene = SyntheticScene(width, lines, seed=0)
    dn = np.empty((4, lines, width), np.uint16)
    for start in range(0, lines, 256):
        rho, _ = scene.rows(start, min(start + 256, lines))
        dn[:, start:start + rho.shape[1]] = encode_rows(rho, "16UC4")
    np.save(path, dn)
    return str(path)


def _percentiles(values_ms: list[float]) -> dict:
    if not values_ms:
        return {"p50": None, "p99": None, "max": None}
    a = np.asarray(values_ms)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def end_to_end(weights: Path, width: int, rate: float, lines: int) -> dict:
    ns = f"bench_{os.getpid()}_{width}_{int(rate)}"
    rclpy.init()
    segmenter = camera = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source = _rendered_scene(width, lines, tmp)
            observer = Observer(ns)
            with NodeThreads([observer]):
                segmenter = _start("segmenter", ns, model=weights, qos_depth=0)
                poll_until(observer.connected, 30)
                camera = _start("pushbroom_camera", ns, source=source, width=width, length=lines,
                                line_rate_hz=float(rate), wait_for_subscribers=2, qos_depth=0)
                observer.wait_for(lines, 60 + (lines / rate * 2 if rate else lines * 0.02))
                time.sleep(0.5)
                stamps = list(observer.stamps)
                scan_seen, mask_seen = dict(observer.scan_seen), dict(observer.mask_seen)
    finally:
        _stop(camera, segmenter)
        rclpy.try_shutdown()
    unique = sorted(set(stamps))
    disorder = len(stamps) - len(unique) + sum(1 for a, b in zip(stamps, stamps[1:]) if b < a)
    stamp_to_mask = [(mask_seen[s] - s) / 1e6 for s in unique] if rate else []
    stamp_to_scan = [(t - s) / 1e6 for s, t in scan_seen.items()] if rate else []  # one hop, no model
    turnaround = [(mask_seen[s] - scan_seen[s]) / 1e6 for s in unique if s in scan_seen]
    span = (max(mask_seen.values()) - min(mask_seen.values())) / 1e9 if len(mask_seen) > 1 else float("nan")
    return {"width": width, "rate_hz": rate, "lines": lines, "received": len(unique),
            "lost": lines - len(unique), "disorder": disorder,
            "stamp_to_mask_ms": _percentiles(stamp_to_mask), "stamp_to_scanline_ms": _percentiles(stamp_to_scan),
            "scanline_to_mask_ms": _percentiles(turnaround),
            "lines_per_s": (len(unique) - 1) / span if span == span and span > 0 else 0.0}


def rss_over_length(weights: Path, lines: int, rate: float) -> dict:
    """Segmenter RSS after 1,000 lines, half the scene and all of it.  At the sensor's rate nothing
    queues, so growth is what the segmenter keeps per line; at the maximum rate the reader's queue
    of up to one camera batch (1,000 lines) adds its high-water mark."""
    import psutil
    ns = f"bench_rss_{os.getpid()}_{int(rate)}"
    rclpy.init()
    segmenter = camera = None
    samples = {}
    try:
        recorder = Recorder("bench_rss", gt_topic=None, keep_lines=False, namespace=ns)
        with NodeThreads([recorder]):
            segmenter = _start("segmenter", ns, model=weights, qos_depth=0)
            proc = psutil.Process(segmenter.pid)
            poll_until(recorder.connected, 30)
            camera = _start("pushbroom_camera", ns, width=384, length=lines, line_rate_hz=float(rate),
                            wait_for_subscribers=1, qos_depth=0)
            for mark in (1000, lines // 2, lines):
                recorder.wait_for(mark, 60 + mark * (2 / rate if rate else 0.02))
                samples[mark] = proc.memory_info().rss / 2**20
            received = len(recorder.stamps)
    finally:
        _stop(camera, segmenter)
        rclpy.try_shutdown()
    return {"lines": lines, "rate_hz": rate, "received": received, "rss_1000_mb": samples[1000],
            "rss_half_mb": samples[lines // 2], "rss_end_mb": samples[lines]}
