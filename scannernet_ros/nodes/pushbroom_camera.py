"""pushbroom_camera: publishes a scene one line at a time, as a push-broom sensor does.

Publishes ``scanline`` (sensor_msgs/Image, height 1) with header.stamp = the line's acquisition
time on the sensor's schedule, and ``gt_line`` (mono8: 0 clear, 255 cloud, 127 no data) when the
scene has ground truth.  Status on /diagnostics.  ``line_rate_hz`` applies at runtime (the stamps
go on from the last line at the new spacing); set the segmenter's to the same value.  A scene that
does not loop ends the process (exit 0) once its last line is acknowledged, so a launch ends too.
"""
from __future__ import annotations

import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ..camera import BLOCK, LANDSAT8_LINE_RATE_HZ, UNPACED_BLOCK, scan, truth_mono8
from ..codec import INPUT_ENCODINGS
from ..diagnostics import OK, WARN, Report
from ..pacing import run_paced, wait_for
from ..scenes import open_scene
from .ros_common import (ParameterError, apply_at_runtime, declare, diagnostic_array, from_ns, line_image, qos,
                         refuse_sim_time, run_node, wait_acked)

STATUS_NAME = "scannernet_ros: pushbroom_camera"


class PushbroomCamera(Node):

    def __init__(self, **kwargs) -> None:
        super().__init__("pushbroom_camera", **kwargs)
        source = declare(self, "source", "synthetic", "'synthetic', a 38-Cloud patch/scene, an L8 Biome patch or an image file")
        self.encoding = declare(self, "encoding", "16UC4", "bands and bit depth of scanline", choices=INPUT_ENCODINGS)
        width = declare(self, "width", 384, "synthetic scene width in pixels", (1, 1 << 16))
        length = declare(self, "length", 1000, "synthetic scene length in lines", (1, 1 << 40))
        seed = declare(self, "seed", 0, "synthetic scene seed", (0, (1 << 31) - 1))
        self.loop = declare(self, "loop", False, "start the scene again at its end")
        self.line_rate = declare(self, "line_rate_hz", LANDSAT8_LINE_RATE_HZ,
                                 "lines per second; 0 = as fast as the subscribers take them without loss", (0.0, 1e6),
                                 runtime=True)
        self.stamp_rate = declare(self, "stamp_rate_hz", LANDSAT8_LINE_RATE_HZ,
                                  "line spacing of the stamps when line_rate_hz is 0", (1e-3, 1e6))
        self.frame_id = declare(self, "frame_id", "pushbroom_optical_frame", "header.frame_id of every line")
        reliability = declare(self, "qos_reliability", "reliable", "reliable or best_effort",
                              choices=("reliable", "best_effort"))
        depth = declare(self, "qos_depth", 2000, "publisher queue depth (0 = keep all)", (0, 1 << 20))
        self.wait_for = declare(self, "wait_for_subscribers", 0,
                                "hold the first line until scanline has this many subscribers", (0, 1000))
        self.batch = declare(self, "batch", 1000, "lines between acknowledgement waits when line_rate_hz is 0", (1, 1 << 20))

        try:
            self.scene = open_scene(source, width=width, length=length, seed=seed)
            self.lines = scan(self.scene, self.encoding, self.loop, BLOCK if self.line_rate > 0 else UNPACED_BLOCK)
        except (ValueError, OSError, RuntimeError) as exc:
            raise ParameterError(f"parameter 'source': {exc}") from None
        self.period_ns = int(1e9 / (self.line_rate or self.stamp_rate))
        self._new_period: int | None = None     # a line rate set at runtime, taken up at the next line
        self._last_stamp_ns: int | None = None
        self._lock = threading.Lock()
        self.published = 0
        self.finished = False
        self.exit_code: int | None = None       # set at the end of a scene that does not loop
        self.t0_ns: int | None = None
        self._last_report = (time.monotonic(), 0)

        self.scan_pub = self.create_publisher(Image, "scanline", qos(reliability, depth))
        self.gt_pub = self.create_publisher(Image, "gt_line", qos(reliability, depth)) if self.scene.has_truth else None
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self.on_diagnostics)
        apply_at_runtime(self, {"line_rate_hz": self._change_line_rate, "use_sim_time": refuse_sim_time})
        # Acquisition runs in its own thread, like a sensor driver: its pacing must not depend on
        # how busy the executor is with other callbacks.
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.acquire, name="pushbroom_acquisition", daemon=True)
        self._thread.start()
        self.get_logger().info(f"scene {self.scene.name}: {self.scene.width} px x {self.scene.length} lines, "
                               f"{self.encoding} at {self.line_rate or 'max'} lines/s")

    def acquire(self) -> None:
        if not wait_for(lambda: self.scan_pub.get_subscription_count() >= self.wait_for, self._stop):
            return
        self.t0_ns = time.time_ns()
        # Each line is read and its messages built as soon as the previous line is out, in the slack
        # before it is due: at the due time only publish() is left.
        ready = (self.prepare(line) for line in self.lines)
        due = (lambda item: item[0]) if self.line_rate > 0 else None  # unpaced: as fast as acknowledged
        if run_paced(ready, self.send, self._stop, due,
                     flush=lambda: wait_acked([self.scan_pub], self._stop), batch=self.batch):
            self.finished = True
            publishers = [self.scan_pub] + ([self.gt_pub] if self.gt_pub is not None else [])
            wait_acked(publishers, self._stop)
            self.get_logger().info(f"scene finished after {self.published} lines: exiting")
            self.on_diagnostics()
            self.exit_code = 0

    def _change_line_rate(self, hz: float):
        if (hz > 0) != (self.line_rate > 0):
            raise ValueError("switching between paced (> 0) and unpaced (0) publishing needs a restart")

        def commit() -> None:
            with self._lock:
                self.line_rate, self._new_period = hz, int(1e9 / hz)
        return commit

    def prepare(self, line) -> tuple[int, Image, Image | None]:
        """The line's stamp (its acquisition time on the sensor's schedule) and messages."""
        with self._lock:
            if self._new_period is not None and self._last_stamp_ns is not None:
                # the schedule goes on from the last line at the new spacing
                self.t0_ns = self._last_stamp_ns + self._new_period - line.index * self._new_period
                self.period_ns, self._new_period = self._new_period, None
            stamp_ns = self.t0_ns + line.index * self.period_ns
        self._last_stamp_ns = stamp_ns
        header = Header(stamp=from_ns(stamp_ns), frame_id=self.frame_id)
        truth = None
        if self.gt_pub is not None and line.truth is not None:
            truth = line_image(header, truth_mono8(line.truth), "mono8")
        return stamp_ns, line_image(header, line.samples, self.encoding), truth

    def send(self, item: tuple[int, Image, Image | None]) -> None:
        _, scanline, truth = item
        self.scan_pub.publish(scanline)
        if truth is not None:
            self.gt_pub.publish(truth)
        self.published += 1

    def destroy_node(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        super().destroy_node()

    def on_diagnostics(self) -> None:
        now = time.monotonic()
        last_t, last_n = self._last_report
        rate = (self.published - last_n) / max(now - last_t, 1e-9)
        self._last_report = (now, self.published)
        behind = self.line_rate > 0 and not self.finished and self.t0_ns is not None and rate < 0.9 * self.line_rate
        values = {"lines published": str(self.published), "lines per second": f"{rate:.1f}",
                  "line rate hz": f"{self.line_rate:.1f}", "scene": self.scene.name,
                  "width": str(self.scene.width), "encoding": self.encoding,
                  "subscribers": str(self.scan_pub.get_subscription_count()),
                  "finished": str(self.finished).lower()}
        message = "scene finished" if self.finished else ("publishing" if self.t0_ns else "waiting for subscribers")
        report = Report(WARN if behind else OK, "falling behind the line rate" if behind else message, values)
        self.diag_pub.publish(diagnostic_array(self, STATUS_NAME, report))


def main(args: list[str] | None = None) -> int:
    return run_node(PushbroomCamera, args)


if __name__ == "__main__":
    raise SystemExit(main())
