"""segmenter: steps ScannerNet once per scanline and publishes the mask line at once.

Subscribes ``scanline`` (sensor_msgs/Image, height 1).  Publishes ``mask_line`` (mono8, 0/255)
with the input header unchanged, and ``probability_line`` (32FC1) and ``overlay_line`` (rgb8)
only while someone listens.  Service ``~/reset`` (std_srvs/Trigger).  Status on /diagnostics.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from ..codec import ImageFormatError
from ..diagnostics import SegmenterReporter
from ..models import resolve_device
from ..normalise import to_reflectance
from ..render import display_rgb, overlay
from ..streaming import LANDSAT8_LINE_RATE_HZ, LineSegmenter
from .ros_common import ParameterError, declare, diagnostic_array, line_image, qos, run_node, to_ns

STATUS_NAME = "scannernet_ros: segmenter"


class Segmenter(Node):

    def __init__(self, **kwargs) -> None:
        super().__init__("segmenter", **kwargs)
        model = declare(self, "model", "scannernet_small", "registry name (shipped weights) or path to a .safetensors file")
        device = declare(self, "device", "cpu", "cpu, cuda, cuda:N or auto")
        self.threshold = declare(self, "threshold", 0.5, "cloud probability at which a pixel is cloud", (0.0, 1.0))
        num_threads = declare(self, "num_threads", 1, "CPU threads for the model (0 = PyTorch default)", (0, 256))
        line_rate = declare(self, "line_rate_hz", LANDSAT8_LINE_RATE_HZ,
                            "nominal sensor line rate: turns stamp gaps into missing lines", (1e-3, 1e6))
        reset_gap = declare(self, "reset_gap_lines", 10,
                            "reset the recurrent state after a stamp gap of more lines (0 = never)", (0, 1 << 30))
        reliability = declare(self, "qos_reliability", "reliable", "scanline QoS: reliable or best_effort",
                              choices=("reliable", "best_effort"))
        depth = declare(self, "qos_depth", 2000, "scanline queue depth (0 = keep all)", (0, 1 << 20))
        diag_period = declare(self, "diagnostics_period_s", 1.0, "seconds between /diagnostics reports", (0.05, 3600.0))

        try:
            resolved = resolve_device(device)
        except ValueError as exc:
            raise ParameterError(f"parameter 'device': {exc}") from None
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.model_name = model
        self.core = LineSegmenter.from_file(model, resolved, line_rate_hz=line_rate, reset_gap_lines=reset_gap)
        self.device = str(resolved)
        self.reporter = SegmenterReporter()
        self.diag_period = diag_period

        out_qos = qos("reliable", depth)
        self.mask_pub = self.create_publisher(Image, "mask_line", out_qos)
        self.prob_pub = self.create_publisher(Image, "probability_line", out_qos)
        self.overlay_pub = self.create_publisher(Image, "overlay_line", out_qos)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(Image, "scanline", self.on_scanline, qos(reliability, depth))
        self.create_service(Trigger, "~/reset", self.on_reset)
        self.create_timer(diag_period, self.on_diagnostics)
        self.get_logger().info(f"segmenting with {model} on {self.device} "
                               f"({self.core.info.architecture}, bands {','.join(self.core.bands)})")

    def on_scanline(self, msg: Image, info: dict) -> None:
        received_ns = self.get_clock().now().nanoseconds
        arrived_ns = info.get("received_timestamp", 0)
        if arrived_ns:
            self.reporter.queue_ms.add((time.time_ns() - arrived_ns) / 1e6)
        stamp_ns = to_ns(msg.header.stamp)
        try:
            line = self.core.decode(msg, stamp_ns)
            prob = self.core.process(line, stamp_ns)
        except ImageFormatError as err:  # already counted by the core under its reason
            self.get_logger().error(f"rejected scanline: {err}", throttle_duration_sec=1.0)
            return
        self.reporter.e2e_ms.add((received_ns - stamp_ns) / 1e6)
        cloud = prob >= self.threshold
        self.mask_pub.publish(line_image(msg.header, cloud.astype(np.uint8) * 255, "mono8"))
        if self.prob_pub.get_subscription_count():
            self.prob_pub.publish(line_image(msg.header, prob, "32FC1"))
        if self.overlay_pub.get_subscription_count():
            rgb = display_rgb(to_reflectance(line.select(("red", "green", "blue")), line.kind,
                                             self.core.info.input))
            self.overlay_pub.publish(line_image(msg.header, overlay(rgb, cloud).T, "rgb8"))

    def on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.core.reset("request")
        response.success = True
        response.message = "recurrent state cleared; the next line starts from zeros"
        return response

    def on_diagnostics(self) -> None:
        report = self.reporter.report(self.core, self.diag_period, self.model_name, self.device)
        self.diag_pub.publish(diagnostic_array(self, STATUS_NAME, report))


def main(args: list[str] | None = None) -> int:
    return run_node(Segmenter, args)


if __name__ == "__main__":
    raise SystemExit(main())
