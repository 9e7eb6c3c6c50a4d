"""segmenter: steps ScannerNet once per scanline and publishes the mask line at once.

A managed (lifecycle) node.  With ``autostart`` (the default) it configures and activates itself;
otherwise it waits for ``ros2 lifecycle set``: configure loads and checks the weights, activate
starts answering lines, deactivate stops answering them (counted as ``lines not answered
(inactive)``), cleanup frees the model.

Subscribes ``scanline`` (sensor_msgs/Image, height 1).  Publishes ``mask_line`` (mono8, 0/255)
with the input header unchanged, and ``probability_line`` (32FC1) and ``overlay_line`` (rgb8)
only while someone listens, and ``cloud_cover`` (diagnostic_msgs/DiagnosticArray) once per frame of
``frame_lines`` lines.  Service ``~/reset`` (std_srvs/Trigger).  Status on /diagnostics.

Applied at runtime (``ros2 param set``): ``threshold`` (from the next line), ``discard_above``, ``line_rate_hz``,
``reset_gap_lines``, ``num_threads`` and ``model`` (the new weights are loaded and checked first;
a model that does not load is refused and the old one keeps running).  The rest are read-only.
"""
from __future__ import annotations

import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy._rclpy_pybind11 import RCLError
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.event_handler import SubscriptionEventCallbacks
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from ..codec import ImageFormatError
from ..cover import CloudCover, Frame
from ..diagnostics import ERROR, OK, WARN, Report, SegmenterReporter
from ..normalise import to_reflectance
from ..render import display_rgb, overlay
from ..streaming import LANDSAT8_LINE_RATE_HZ, Counters, LineSegmenter, device_name, set_threads
from ..weights import WeightsError
from ..zoo import DEFAULT_MODEL, runnable_per_line
from .ros_common import (AlreadyLogged, ParameterError, apply_at_runtime, declare, diagnostic_array, from_ns, line_image,
                         qos, refuse_sim_time, run_node, to_ns)

STATUS_NAME = "scannernet_ros: segmenter"


def load_segmenter(model: str, device: str, line_rate_hz: float, reset_gap_lines: int) -> LineSegmenter:
    """A LineSegmenter for ``model``, or a ParameterError that names the parameter and the choices."""
    try:
        return LineSegmenter.from_file(model, device, line_rate_hz=line_rate_hz, reset_gap_lines=reset_gap_lines)
    except (WeightsError, ValueError) as exc:
        shipped = ", ".join(runnable_per_line())
        raise ParameterError(f"parameter 'model' = {model!r}: {exc} (shipped models that run per line: {shipped}; "
                             "or give a path to a .safetensors file)") from None


class Segmenter(LifecycleNode):

    def __init__(self, **kwargs) -> None:
        super().__init__("segmenter", **kwargs)
        self._refuse_impossible_transitions()
        self.model_name = declare(self, "model", DEFAULT_MODEL,
                                  "registry name (shipped weights) or path to a .safetensors file", runtime=True)
        device = declare(self, "device", "cpu", "cpu, cuda, cuda:N or auto")
        self.threshold = declare(self, "threshold", 0.5, "cloud probability at which a pixel is cloud",
                                 (0.0, 1.0), runtime=True)
        num_threads = declare(self, "num_threads", 1, "CPU threads for the model (0 = every CPU): the compiled "
                              "ScannerNet step splits lines of 2,048 px and more over them; BLAS threads of the numpy steps",
                              (0, 256), runtime=True)
        self.line_rate = declare(self, "line_rate_hz", LANDSAT8_LINE_RATE_HZ,
                                 "nominal sensor line rate: turns stamp gaps into missing lines", (1e-3, 1e6), runtime=True)
        self.reset_gap = declare(self, "reset_gap_lines", 10,
                                 "reset the recurrent state after a stamp gap of more lines (0 = never)",
                                 (0, 1 << 30), runtime=True)
        self.reliability = declare(self, "qos_reliability", "reliable", "scanline QoS: reliable or best_effort",
                                   choices=("reliable", "best_effort"))
        self.depth = declare(self, "qos_depth", 10000, "scanline queue depth in lines (0 = keep all)", (0, 1 << 20))
        self.diag_period = declare(self, "diagnostics_period_s", 1.0, "seconds between /diagnostics reports",
                                   (0.05, 3600.0))
        self.frame_lines = declare(self, "frame_lines", 384, "lines per cloud_cover frame (a reset also ends one)",
                                   (1, 1 << 30))
        self.discard_above = declare(self, "discard_above", 0.7,
                                     "cloud fraction above which cloud_cover flags a frame for discarding", (0.0, 1.0),
                                     runtime=True)
        autostart = declare(self, "autostart", True, "configure and activate at start-up")
        try:
            self.device = device_name(device)
        except ValueError as exc:
            raise ParameterError(f"parameter 'device': {exc}") from None
        set_threads(num_threads)
        self.core: LineSegmenter | None = None
        self.active = False
        self.counters = Counters()      # one account of every line, across cleanup, configure and swaps
        self.cover = CloudCover(self.frame_lines)
        self.frame_id = ""
        self.configure_error: str | None = None
        self._lock = threading.Lock()   # a model swap never lands in the middle of a line
        self.reporter = SegmenterReporter()
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # a steady clock: /diagnostics keeps coming whatever the ROS time does (no /clock yet, a paused bag)
        self.create_timer(self.diag_period, self.on_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))
        # Lines are taken in and answered "not configured" or "inactive" in every state, so every
        # line offered is in the account, and so is the reset service.
        events = SubscriptionEventCallbacks(message_lost=self.on_message_lost)
        self.scanline_sub = self.create_subscription(Image, "scanline", self.on_scanline,
                                                     qos(self.reliability, self.depth), event_callbacks=events)
        self.reset_srv = self.create_service(Trigger, "~/reset", self.on_reset, qos_profile=qos("reliable", 0))
        apply_at_runtime(self, {
            "use_sim_time": refuse_sim_time,
            "threshold": lambda v: lambda: setattr(self, "threshold", v),
            "discard_above": lambda v: lambda: setattr(self, "discard_above", v),
            "num_threads": lambda v: lambda: set_threads(v),
            "line_rate_hz": self._change_line_rate,
            "reset_gap_lines": self._change_reset_gap,
            "model": self._change_model,
        })
        if autostart:
            self.trigger_configure()
            if self.core is None:
                raise AlreadyLogged(self.configure_error)
            self.trigger_activate()

    # -- lifecycle ------------------------------------------------------------------------

    def _refuse_impossible_transitions(self) -> None:
        """rclpy's change_state service raises (and so ends the process) on a transition that does
        not exist from the current state, e.g. `ros2 lifecycle set ... activate` while unconfigured;
        answer it as refused instead, the state unchanged."""
        for service in self.services:
            if service.srv_name.endswith("/change_state"):
                change_state = service.callback

                def guarded(request, response, change_state=change_state):
                    try:
                        return change_state(request, response)
                    except RCLError as exc:
                        self.get_logger().warn(f"transition {request.transition.id} refused: {exc}".splitlines()[0])
                        response.success = False
                        return response
                service.callback = guarded

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.core = load_segmenter(self.model_name, self.device, self.line_rate, self.reset_gap)
        except ParameterError as exc:
            self.configure_error = str(exc)
            self.get_logger().error(self.configure_error)
            return TransitionCallbackReturn.FAILURE
        self.configure_error = None
        out_qos = qos("reliable", self.depth)
        self.mask_pub = self.create_lifecycle_publisher(Image, "mask_line", out_qos)
        self.prob_pub = self.create_lifecycle_publisher(Image, "probability_line", out_qos)
        self.overlay_pub = self.create_lifecycle_publisher(Image, "overlay_line", out_qos)
        self.cover_pub = self.create_lifecycle_publisher(DiagnosticArray, "cloud_cover", 100)
        self.cover = CloudCover(self.frame_lines)
        self.core.counters = self.counters
        self.get_logger().info(f"configured: {self.model_name} on {self.device} "
                               f"({self.core.info.architecture}, bands {','.join(self.core.bands)}, "
                               f"threshold {self.threshold}, stepper {self.core.step_in_use()})")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = True
        self.get_logger().info("active: answering scanlines")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self.get_logger().info("inactive: scanlines are counted, not answered")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        """Undo :meth:`on_configure`: no model, no outputs (lines are still taken in and counted)."""
        if self.core is None:
            return
        for pub in (self.mask_pub, self.prob_pub, self.overlay_pub, self.cover_pub):
            self.destroy_lifecycle_publisher(pub)
        self.core = None

    # -- runtime parameters ---------------------------------------------------------------

    def _change_line_rate(self, hz: float):
        def commit() -> None:
            self.line_rate = hz
            if self.core is not None:
                self.core.line_period_ns = int(1e9 / hz)
        return commit

    def _change_reset_gap(self, lines: int):
        def commit() -> None:
            self.reset_gap = lines
            if self.core is not None:
                self.core.reset_gap_lines = lines
        return commit

    def _change_model(self, model: str):
        """Load and check the new weights now; swap them in only when the change is accepted."""
        new = None
        if self.core is not None:
            try:
                new = load_segmenter(model, self.device, self.line_rate, self.reset_gap)
            except ParameterError as exc:
                raise ValueError(str(exc)) from None

        def commit() -> None:
            self.model_name = model
            if new is not None:
                with self._lock:
                    new.counters = self.counters        # one account of lines (and one stamp clock) across models
                    new.counters.resets["model_change"] += 1
                    self.core = new
                    self.publish_cover(self.cover.close(), self.frame_id)   # a frame never mixes two models
        return commit

    # -- lines ----------------------------------------------------------------------------

    def on_scanline(self, msg: Image, info: dict) -> None:
        self.frame_id = msg.header.frame_id
        received_ns = self.get_clock().now().nanoseconds
        arrived_ns = info.get("received_timestamp", 0)
        if arrived_ns:
            self.reporter.queue_ms.add((time.time_ns() - arrived_ns) / 1e6)
        stamp = msg.header.stamp
        if not 0 <= stamp.nanosec < 1_000_000_000:
            self.counters.count_rejected("malformed_stamp", None, 0)
            self.get_logger().error(f"rejected scanline: header.stamp.nanosec {stamp.nanosec} is not below 1e9",
                                    throttle_duration_sec=1.0)
            return
        stamp_ns = to_ns(stamp)
        with self._lock:
            core, threshold = self.core, self.threshold
            if core is None:
                self.counters.count_unanswered("unconfigured", stamp_ns, int(1e9 / self.line_rate))
                return
            if not self.active:
                core.skip("inactive", stamp_ns)
                return
            resets = sum(core.counters.resets.values())
            try:
                line = core.decode(msg, stamp_ns)
                prob = core.process(line, stamp_ns)
            except ImageFormatError as err:  # already counted by the core under its reason
                self.get_logger().error(f"rejected scanline: {err}", throttle_duration_sec=1.0)
                return
        self.reporter.e2e_ms.add((received_ns - stamp_ns) / 1e6)
        cloud = prob >= threshold
        self.mask_pub.publish(line_image(msg.header, cloud.astype(np.uint8) * 255, "mono8"))
        if sum(core.counters.resets.values()) != resets:   # new ground: the frame before it ends here
            self.publish_cover(self.cover.close(), msg.header.frame_id)
        self.publish_cover(self.cover.add(stamp_ns, cloud), msg.header.frame_id)
        if self.prob_pub.get_subscription_count():
            self.prob_pub.publish(line_image(msg.header, prob, "32FC1"))
        if self.overlay_pub.get_subscription_count():
            rgb = display_rgb(to_reflectance(line.select(("red", "green", "blue")), line.kind, core.info.input))
            self.overlay_pub.publish(line_image(msg.header, overlay(rgb, cloud).T, "rgb8"))

    def publish_cover(self, frame: Frame | None, frame_id: str) -> None:
        """One status per frame, stamped with its first line: cloud fraction, valid pixels, lines,
        and ``discard`` when the cloud fraction is above ``discard_above``."""
        if frame is None:
            return
        discard = frame.cloud_fraction > self.discard_above
        values = {"cloud fraction": f"{frame.cloud_fraction:.4f}", "valid pixels": str(frame.valid_pixels),
                  "lines": str(frame.lines), "discard": str(discard).lower()}
        status = DiagnosticStatus(level=bytes([WARN if discard else OK]), name="scannernet_ros: cloud cover",
                                  message=f"{100 * frame.cloud_fraction:.1f} % cloud" + (", discard" if discard else ""),
                                  hardware_id=frame_id, values=[KeyValue(key=k, value=v) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp, msg.header.frame_id = from_ns(frame.first_stamp_ns), frame_id
        self.cover_pub.publish(msg)

    def on_message_lost(self, event) -> None:
        """Lines the middleware reports lost before they reached this node (best effort, overruns)."""
        self.reporter.lost = event.total_count

    def on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            if self.core is None:
                response.success, response.message = False, "not configured: no state to clear"
                return response
            self.core.reset("request")
            self.publish_cover(self.cover.close(), self.frame_id)   # the frame before the reset ends here
        response.success = True
        response.message = "recurrent state cleared; the next line starts from zeros"
        return response

    def on_diagnostics(self) -> None:
        unanswered = {f"lines not answered ({k})": str(self.counters.unanswered[k]) for k in ("inactive", "unconfigured")}
        if self.core is None:
            c = self.counters
            report = Report(ERROR if self.configure_error else WARN,
                            self.configure_error or "unconfigured: no model loaded",
                            {"model": self.model_name, "lines in": str(c.lines_in), "lines out": str(c.lines_out),
                             "rejected": str(sum(c.rejected.values())), **unanswered})
        else:
            report = self.reporter.report(self.core, self.diag_period, self.model_name, self.device)
            report.values.update(unanswered)
            report.values["threshold"] = f"{self.threshold:g}"
            if not self.active:
                report.level, report.message = max(report.level, WARN), "inactive: lines are not answered"
        self.diag_pub.publish(diagnostic_array(self, STATUS_NAME, report))


def main(args: list[str] | None = None) -> int:
    return run_node(Segmenter, args)


if __name__ == "__main__":
    raise SystemExit(main())
