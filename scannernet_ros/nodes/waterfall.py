"""waterfall: stitches ``scanline`` and ``mask_line`` into a rolling image for rqt_image_view or Foxglove.

Publishes ``waterfall/image`` (rgb8, the last ``rows`` lines, newest at the bottom, cloud in magenta).
Status on /diagnostics: lines and masks shown, lines it could not show, images published.
"""
from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ..codec import ImageFormatError, decode_line
from ..normalise import InputSpec, to_reflectance
from ..render import display_rgb
from ..waterfall import Waterfall
from ..diagnostics import OK, WARN, Report
from .ros_common import declare, diagnostic_array, qos, run_node, to_ns

STATUS_NAME = "scannernet_ros: waterfall"


class WaterfallNode(Node):

    def __init__(self, **kwargs) -> None:
        super().__init__("waterfall", **kwargs)
        rows = declare(self, "rows", 512, "lines shown", (1, 1 << 16))
        rate = declare(self, "publish_rate_hz", 4.0, "images per second", (0.01, 100.0))
        self.frame_id = "pushbroom_optical_frame"
        self.spec = InputSpec()
        self.picture = Waterfall(rows)
        self.rejected = 0
        self.shown = {"scanline": 0, "mask_line": 0, "images": 0}
        self._last_rejected = 0
        self.pub = self.create_publisher(Image, "waterfall/image", 2)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self.on_diagnostics)
        # A viewer must never hold the pipeline back: best effort, with room for bursts.
        self.create_subscription(Image, "scanline", self.on_scanline, qos("best_effort", 100))
        self.create_subscription(Image, "mask_line", self.on_mask, qos("best_effort", 100))
        self.create_timer(1.0 / rate, self.on_publish)

    def on_scanline(self, msg: Image) -> None:
        try:
            line = decode_line(msg)
            rgb = display_rgb(to_reflectance(line.select(("red", "green", "blue")), line.kind, self.spec))
        except ImageFormatError as err:
            self.rejected += 1
            self.get_logger().warn(f"cannot show scanline: {err}", throttle_duration_sec=5.0)
            return
        self.frame_id = msg.header.frame_id
        self.picture.add_line(to_ns(msg.header.stamp), rgb)
        self.shown["scanline"] += 1

    def on_mask(self, msg: Image) -> None:
        try:
            line = decode_line(msg)
        except ImageFormatError as err:
            self.rejected += 1
            self.get_logger().warn(f"cannot show mask_line: {err}", throttle_duration_sec=5.0)
            return
        self.picture.add_mask(to_ns(msg.header.stamp), line.samples[0] > 127)
        self.shown["mask_line"] += 1

    def on_publish(self) -> None:
        image = self.picture.image()
        if image is None:
            return
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.frame_id)
        msg = Image(header=header, height=image.shape[0], width=image.shape[1], encoding="rgb8",
                    is_bigendian=0, step=image.shape[1] * 3)
        msg.data = np.ascontiguousarray(image).tobytes()
        self.pub.publish(msg)
        self.shown["images"] += 1

    def on_diagnostics(self) -> None:
        new, self._last_rejected = self.rejected - self._last_rejected, self.rejected
        values = {"scanlines shown": str(self.shown["scanline"]), "mask lines shown": str(self.shown["mask_line"]),
                  "lines not shown (malformed)": str(self.rejected), "images published": str(self.shown["images"])}
        message = f"{new} lines could not be shown" if new else ("showing" if self.shown["scanline"] else "waiting for scanlines")
        self.diag_pub.publish(diagnostic_array(self, STATUS_NAME, Report(WARN if new else OK, message, values)))


def main(args: list[str] | None = None) -> int:
    return run_node(WaterfallNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
