"""End-to-end runs for ``scannernet bench``: camera and segmenter as separate processes (the
installed executables), observed from a third process that records when each line arrives."""
from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rclpy

from ..camera import LANDSAT8_LINE_RATE_HZ, encode_rows
from ..pacing import poll_until, wait_until_ns
from ..scenes.synthetic import SyntheticScene
from ..nodes.recorder import Recorder
from ..nodes.ros_common import NodeThreads, from_ns, line_image, qos
from ..nodes.segmenter import STATUS_NAME as SEGMENTER_STATUS

SEGMENTER_REPORT_S = 0.5  # the segmenter's diagnostics period in the runs: its own view of each line


def executable(name: str) -> str:
    """The installed console script, as ``ros2 run`` would start it: beside this Python (a venv),
    in the package's ``lib/scannernet_ros`` (a colcon install, found through the ament index), else
    on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    try:
        from ament_index_python.packages import get_package_prefix
        installed = Path(get_package_prefix("scannernet_ros")) / "lib" / "scannernet_ros" / name
        if installed.exists():
            return str(installed)
    except Exception:  # noqa: BLE001 - no ament index outside a ROS workspace
        pass
    return shutil.which(name) or name


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
    path = Path(folder) / f"scene_{width}x{lines}.npy"
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


def _segmenter_view(reports: list[dict[str, str]]) -> dict:
    """Where the time goes, seen from inside the segmenter: medians over its reports that had
    lines in them of (receive - stamp) p50 and model compute p50."""
    busy = [r for r in reports if float(r.get("lines per second", "0")) > 0]

    def median(key: str) -> float | None:
        values = [float(r[key]) for r in busy if r.get(key, "nan") != "nan"]
        return float(np.median(values)) if values else None

    return {"reports": len(busy), "receive_p50_ms": median("end-to-end latency p50 ms"),
            "compute_p50_ms": median("compute latency p50 ms")}


def end_to_end(weights: Path | None, width: int, rate: float, lines: int) -> dict:
    """Camera -> segmenter -> observer, the observer listening to ``mask_line`` only.  With
    ``weights`` None there is no segmenter and the observer listens to ``scanline``: one hop, no
    model.  A listener on both topics would make the camera write to two readers and the observer
    wake twice per line, and would add its own cost to the path it measures; the segmenter's own
    diagnostics say instead when lines reached it and how long the model took."""
    ns = f"bench_{os.getpid()}_{width}_{int(rate)}_{'hop' if weights is None else 'seg'}"
    rclpy.init()
    procs = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source = _rendered_scene(width, lines, tmp)
            observer = Recorder("bench_observer", mask_topic="scanline" if weights is None else "mask_line",
                                gt_topic=None, keep_lines=False, namespace=ns)
            with NodeThreads([observer]):
                if weights is not None:
                    procs.append(_start("segmenter", ns, model=weights, qos_depth=0,
                                        diagnostics_period_s=SEGMENTER_REPORT_S))
                    poll_until(observer.connected, 30)
                procs.append(_start("pushbroom_camera", ns, source=source, width=width, length=lines,
                                    line_rate_hz=float(rate), wait_for_subscribers=1, qos_depth=0))
                observer.wait_for(lines, 60 + (lines / rate * 2 if rate else lines * 0.02))
                time.sleep(0.5)
                stamps, latency_ns = list(observer.stamps), list(observer.latency_ns)
                reports = list(observer.reports.get(SEGMENTER_STATUS, []))
    finally:
        _stop(*reversed(procs))
        rclpy.try_shutdown()
    received_at: dict[int, int] = {}
    for stamp, latency in zip(stamps, latency_ns):
        received_at.setdefault(stamp, stamp + latency)  # the first copy of a duplicate
    unique = sorted(received_at)
    disorder = len(stamps) - len(unique) + sum(1 for a, b in zip(stamps, stamps[1:]) if b < a)
    span = (max(received_at.values()) - min(received_at.values())) / 1e9 if len(unique) > 1 else 0.0
    return {"width": width, "rate_hz": rate, "lines": lines, "topic": "scanline" if weights is None else "mask_line",
            "received": len(unique), "lost": lines - len(unique), "disorder": disorder,
            # unpaced, stamps follow stamp_rate_hz rather than the clock: no latency to report
            "latency_ms": _percentiles([(received_at[s] - s) / 1e6 for s in unique] if rate else []),
            "lines_per_s": (len(unique) - 1) / span if span > 0 else 0.0,
            "segmenter": _segmenter_view(reports) if weights is not None else None}


def udp_floor(width: int, rate: float, lines: int) -> dict:
    """A datagram the size of a 16UC4 scanline, sent on the camera's schedule from a second process
    over loopback UDP: what any transport between two processes pays here in wake-ups and copies,
    under the middleware.  Latency is receive time minus due time, as for the camera."""
    size = width * 4 * 2
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(30.0)  # the sender's start-up (a fresh interpreter) comes first
        sender = multiprocessing.get_context("spawn").Process(
            target=_send_datagrams, args=(sock.getsockname()[1], size, rate, lines), daemon=True)
        sender.start()
        latency_ms = []
        try:
            for _ in range(lines):
                data = sock.recv(size + 8)
                latency_ms.append((time.time_ns() - int.from_bytes(data[:8], "little")) / 1e6)
                sock.settimeout(5.0)
        except TimeoutError:
            pass
        sender.join(10)
    return {"width": width, "rate_hz": rate, "lines": lines, "topic": "udp", "received": len(latency_ms),
            "lost": lines - len(latency_ms), "latency_ms": _percentiles(latency_ms)}


def _send_datagrams(port: int, size: int, rate: float, lines: int) -> None:
    period_ns, payload, stop = int(1e9 / rate), bytes(size), threading.Event()
    t0 = time.time_ns() + 100_000_000  # the receiver has been waiting since before this process began
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(lines):
            due = t0 + i * period_ns
            wait_until_ns(due, stop)
            sock.sendto(due.to_bytes(8, "little") + payload, ("127.0.0.1", port))


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
            torch_mapped = _maps_torch(segmenter.pid)
            received = len(recorder.stamps)
    finally:
        _stop(camera, segmenter)
        rclpy.try_shutdown()
    return {"lines": lines, "rate_hz": rate, "received": received, "rss_1000_mb": samples[1000],
            "rss_half_mb": samples[lines // 2], "rss_end_mb": samples[lines], "libtorch_mapped": torch_mapped}


def _maps_torch(pid: int) -> bool:
    """Whether a process has libtorch (or any torch library) mapped: the on-board path must not."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def start_to_first_mask(weights: Path, runs: int = 3) -> dict:
    """Seconds from starting the segmenter executable to its first mask line, as a consumer sees it:
    interpreter start, imports, weights, ROS discovery and the first line.  A line is offered every
    5 ms from before the start, so the figure does not wait on a camera."""
    from std_msgs.msg import Header
    from sensor_msgs.msg import Image
    seconds = []
    samples = np.full((4, 384), 20000, np.uint16)
    for run in range(runs):
        ns = f"bench_start_{os.getpid()}_{run}"
        rclpy.init()
        segmenter = None
        try:
            recorder = Recorder("bench_start", gt_topic=None, keep_lines=False, namespace=ns)
            pub = recorder.create_publisher(Image, "scanline", qos("reliable", 10))
            with NodeThreads([recorder]):
                t0 = time.perf_counter()
                segmenter = _start("segmenter", ns, model=weights)
                stamp = time.time_ns()
                while not recorder.stamps and time.perf_counter() - t0 < 60:
                    stamp += int(1e9 / LANDSAT8_LINE_RATE_HZ)
                    pub.publish(line_image(Header(stamp=from_ns(stamp), frame_id="bench"), samples, "16UC4"))
                    time.sleep(0.005)
                if recorder.stamps:
                    seconds.append(time.perf_counter() - t0)
        finally:
            _stop(segmenter)
            rclpy.try_shutdown()
    return {"runs": runs, "answered": len(seconds), "seconds": seconds,
            "median_s": float(np.median(seconds)) if seconds else None}
