"""bag_player: replays scene bags on the live topics, so replay evaluation needs no rosbag2 install.

Publishes ``scanline``, ``gt_line`` and ``scene`` (std_msgs/Header: stamp = the scene's first
line, frame_id = its name, before its lines) with the recorded headers, spaced as recorded divided by ``rate``, or as fast as reliable
subscribers take them without loss when ``rate`` is 0.  When every bag is played it publishes
``replay_done`` (std_msgs/Empty, transient local, so late joiners still see it).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image
from std_msgs.msg import Empty, Header

from ..bags import GT_LINE, SCANLINE, SCENE, BagError, find_bags, read_bag
from ..pacing import run_paced, wait_for
from .ros_common import ParameterError, declare, from_ns, qos, run_node, to_ns, wait_acked

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
MARKERS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def to_ros_header(h) -> Header:
    """A rosbags Header -> an rclpy Header."""
    return Header(stamp=from_ns(to_ns(h.stamp)), frame_id=h.frame_id)


def to_ros_image(m) -> Image:
    """A rosbags Image -> an rclpy Image, fields copied as recorded."""
    msg = Image(header=to_ros_header(m.header),
                height=m.height, width=m.width, encoding=m.encoding, is_bigendian=m.is_bigendian, step=m.step)
    msg.data = bytes(m.data)
    return msg


class BagPlayer(Node):

    def __init__(self, **kwargs) -> None:
        super().__init__("bag_player", **kwargs)
        bag = declare(self, "bag", "", "a scene bag, or a folder of them (played in name order)")
        self.rate = declare(self, "rate", 1.0, "playback speed relative to the recording; 0 = as fast as lossless", (0.0, 1e6))
        self.wait_for = declare(self, "wait_for_subscribers", 1,
                                "hold playback until scanline and gt_line together have this many subscribers", (0, 1000))
        depth = declare(self, "qos_depth", 2000, "queue depth (0 = keep all)", (0, 1 << 20))
        self.batch = declare(self, "batch", 1000, "lines between acknowledgement waits when rate is 0", (1, 1 << 20))
        self.bags = find_bags(Path(bag).expanduser()) if bag else []
        if not self.bags:
            raise ParameterError(f"parameter 'bag': no rosbag2 bag at {bag!r}")
        reliable = qos("reliable", depth)
        self.pubs = {SCANLINE: self.create_publisher(Image, "scanline", reliable),
                     GT_LINE: self.create_publisher(Image, "gt_line", reliable)}
        self.scene_pub = self.create_publisher(Header, "scene", MARKERS)
        self.done_pub = self.create_publisher(Empty, "replay_done", LATCHED)
        self.summary_pub = self.create_publisher(DiagnosticStatus, "replay_summary", LATCHED)
        self.truth_lines = 0
        self.published = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.play, name="bag_playback", daemon=True)
        self._thread.start()

    def play(self) -> None:
        if not wait_for(lambda: sum(p.get_subscription_count() for p in self.pubs.values()) >= self.wait_for, self._stop):
            return
        for bag in self.bags:
            try:
                if not self.play_bag(bag):
                    return
            except BagError as err:  # a broken bag is reported and skipped; the others still play
                self.failed.append(str(err))
                self.get_logger().error(str(err))
            except Exception as exc:  # noqa: BLE001 - whatever a bag holds, the replay goes on
                self.failed.append(f"{bag}: {type(exc).__name__}: {exc}")
                self.get_logger().error(self.failed[-1])
        self.summary_pub.publish(self.summary())
        self.done_pub.publish(Empty())
        self.get_logger().info(f"replay done: {self.published} messages from {len(self.bags)} bag(s)"
                               + (f", {len(self.failed)} failed" if self.failed else ""))

    def play_bag(self, bag: Path) -> bool:
        start = {"wall": None, "bag": None}

        def due(m) -> int:
            if start["wall"] is None:
                start["wall"], start["bag"] = time.time_ns(), m.timestamp
            return start["wall"] + int((m.timestamp - start["bag"]) / self.rate)

        def publish(m) -> None:
            if m.topic == SCENE:
                self.scene_pub.publish(to_ros_header(m.msg))
            else:
                self.pubs[m.topic].publish(to_ros_image(m.msg))
                self.truth_lines += m.topic == GT_LINE
            self.published += 1
        return run_paced(read_bag(bag), publish, self._stop, due if self.rate > 0 else None,
                         flush=self.flush, batch=self.batch)

    def summary(self) -> DiagnosticStatus:
        """What was replayed, so an evaluator can tell a complete replay from a short one."""
        values = {"bags": len(self.bags), "bags failed": len(self.failed), "messages": self.published,
                  "ground-truth lines": self.truth_lines}
        kv = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        kv += [KeyValue(key=f"failed {i}", value=reason) for i, reason in enumerate(self.failed)]
        level = DiagnosticStatus.ERROR if self.failed or not self.published else DiagnosticStatus.OK
        message = f"{len(self.failed)} of {len(self.bags)} bags failed" if self.failed else "replayed"
        return DiagnosticStatus(level=level, name="scannernet_ros: bag_player", message=message, values=kv)

    def flush(self) -> None:
        wait_acked(list(self.pubs.values()), self._stop)

    def destroy_node(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(BagPlayer, args)


if __name__ == "__main__":
    raise SystemExit(main())
