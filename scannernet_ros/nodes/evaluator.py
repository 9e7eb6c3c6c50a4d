"""evaluator: scores ``mask_line`` against ``gt_line`` during a replay, paired by header stamp.

Running metrics go to /diagnostics; when ``replay_done`` arrives (and ``settle_s`` has passed for
the last masks) the JSON report is written to ``report_path``.  Ground-truth lines whose mask never
came are lost masks: the report's status is FAIL and the diagnostics level ERROR.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Empty, Header

from ..codec import ImageFormatError, decode_line
from ..diagnostics import ERROR, OK, Report
from ..replay_eval import StampPairing
from ..atomic import atomic_write
from .bag_player import LATCHED, MARKERS
from .ros_common import declare, diagnostic_array, qos, run_node, to_ns

STATUS_NAME = "scannernet_ros: evaluator"
MATCH_GRACE_S = 0.5


class Evaluator(Node):

    def __init__(self, **kwargs) -> None:
        super().__init__("evaluator", **kwargs)
        self.report_path = Path(declare(self, "report_path", "out/replay_evaluation.json", "where the JSON report is written"))
        self.settle_s = declare(self, "settle_s", 2.0, "after replay_done, report once no line has come for this long "
                                "(or at once when every replayed line is scored)", (0.0, 3600.0))
        self.exit_after_report = declare(self, "exit_after_report", True,
                                         "end the process once the report is written: exit 0 ok, 1 FAIL")
        self.exit_code: int | None = None   # set when done: run_node ends the process with it
        self.replay: DiagnosticStatus | None = None
        self.pairing = StampPairing()
        self.report: dict | None = None
        self.rejected: Counter = Counter()
        self.write_error: str | None = None
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.mask_sub = self.create_subscription(Image, "mask_line", self.on_mask, qos("reliable", 0))
        self.create_subscription(Header, "scene", self.on_scene, MARKERS)
        # Ground truth is subscribed only once a segmenter's mask_line is connected: the bag player
        # waits for this subscriber, so playback cannot start while masks would still go unheard.
        self._matched_at: float | None = None
        self._connect_timer = self.create_timer(0.05, self.connect_truth)
        self.create_subscription(DiagnosticStatus, "replay_summary", self.on_summary, LATCHED)
        self.create_subscription(Empty, "replay_done", self.on_done, LATCHED)
        self.create_timer(1.0, self.on_diagnostics)
        self._finish_timer = None
        self._last_line = time.monotonic()   # when a mask or truth line last arrived

    def connect_truth(self) -> None:
        """Subscribe ground truth (which lets the bag player start) only once the segmenter's
        mask_line has been matched for MATCH_GRACE_S: matching is seen on this side first, and a
        mask published before the segmenter's side has matched too would be lost."""
        if self.mask_sub.get_publisher_count() < 1:
            self._matched_at = None
            return
        now = time.monotonic()
        self._matched_at = self._matched_at or now
        if now - self._matched_at >= MATCH_GRACE_S:
            self._connect_timer.cancel()
            self.create_subscription(Image, "gt_line", self.on_truth, qos("reliable", 0))

    def on_mask(self, msg: Image) -> None:
        self._last_line = time.monotonic()
        row = self.decode(msg, "mask_line")
        if row is not None:
            self.pairing.add_mask(to_ns(msg.header.stamp), row)

    def on_truth(self, msg: Image) -> None:
        self._last_line = time.monotonic()
        row = self.decode(msg, "gt_line")
        if row is not None:
            self.pairing.add_truth(to_ns(msg.header.stamp), row)

    def decode(self, msg: Image, topic: str) -> np.ndarray | None:
        """A mono8 line's pixels; anything else is counted under its topic and reason, not misread."""
        try:
            line = decode_line(msg)
            if line.bands != ("mono",) or line.kind != "uint8":
                raise ImageFormatError("encoding", f"expected mono8, got {msg.encoding}")
        except ImageFormatError as err:
            self.rejected[f"{topic} {err.reason}"] += 1
            self.get_logger().error(f"rejected {topic}: {err}", throttle_duration_sec=1.0)
            return None
        return line.samples[0]

    def on_scene(self, msg: Header) -> None:
        self.pairing.add_scene(to_ns(msg.stamp), msg.frame_id)

    def on_summary(self, msg: DiagnosticStatus) -> None:
        self.replay = msg

    def on_done(self, msg: Empty) -> None:
        if self._finish_timer is None:
            self._finish_timer = self.create_timer(0.05, self.maybe_finish)

    def maybe_finish(self) -> None:
        """Report once every replayed line is scored, or once no line has come for ``settle_s``
        (a busy machine delays the last masks; a fixed wait would call them lost)."""
        replay = {kv.key: kv.value for kv in self.replay.values} if self.replay else {}
        expected = int(replay.get("ground-truth lines", -1))
        complete = expected >= 0 and self.pairing.paired >= expected and not self.pairing.masks
        if complete or time.monotonic() - self._last_line > self.settle_s:
            self.finish()

    def finish(self) -> None:
        self._finish_timer.cancel()
        replay = {kv.key: kv.value for kv in self.replay.values} if self.replay else {}
        expected = int(replay["ground-truth lines"]) if "ground-truth lines" in replay else None
        self.report = self.pairing.report(expected)
        self.report["rejected_lines"] = dict(self.rejected)
        self.report["replay"] = replay
        if self.rejected:
            self.report["reasons"].append(f"{sum(self.rejected.values())} lines rejected")
        if self.replay is None:
            self.report["reasons"].append("no replay_summary from the bag player: completeness unknown")
        elif int(replay.get("bags failed", "0")):
            self.report["reasons"].append(self.replay.message + ": " + "; ".join(
                v for k, v in replay.items() if k.startswith("failed ")))
        if self.report["reasons"]:
            self.report["status"] = "FAIL"
        try:
            self.report_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.report_path, lambda tmp: Path(tmp).write_text(json.dumps(self.report, indent=1, default=float)))
        except OSError as exc:
            self.write_error = f"cannot write report {self.report_path}: {exc}"
            self.get_logger().error(self.write_error)
        log = self.get_logger().info if self.report["status"] == "ok" else self.get_logger().error
        log(f"replay evaluation {self.report['status']}: {self.report['lines_paired']} lines, "
            f"pooled IoU {self.report['pooled']['iou']:.4f}, lost masks {self.report['lost_masks']}"
            + (f"; {'; '.join(self.report['reasons'])}" if self.report["reasons"] else ""))
        self.on_diagnostics()
        if self.exit_after_report:
            self.exit_code = 0 if self.report["status"] == "ok" and not self.write_error else 1

    def on_diagnostics(self) -> None:
        p = self.pairing
        pooled = p.evaluation.pooled()
        values = {"lines paired": str(p.paired), "masks waiting for truth": str(len(p.masks)),
                  "truth waiting for masks": str(len(p.truth)), "scenes": str(len(p.scene_names)),
                  "rejected": str(sum(self.rejected.values())),
                  **{f"rejected {k}": str(v) for k, v in sorted(self.rejected.items())},
                  "pooled iou": f"{pooled['iou']:.4f}", "pooled f1": f"{pooled['f1']:.4f}",
                  "report": str(self.report_path) if self.report else "pending"}
        if self.rejected and self.report is None:
            level, message = ERROR, f"rejected {sum(self.rejected.values())} malformed lines"
        elif self.report is not None and (self.report["status"] != "ok" or self.write_error):
            level, message = ERROR, self.write_error or "; ".join(self.report["reasons"])
        else:
            level, message = OK, "done" if self.report else "evaluating"
        self.diag_pub.publish(diagnostic_array(self, STATUS_NAME, Report(level, message, values)))


def main(args: list[str] | None = None) -> int:
    return run_node(Evaluator, args)


if __name__ == "__main__":
    raise SystemExit(main())
