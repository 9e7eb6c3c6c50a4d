"""The few ROS conversions every node needs: parameters, QoS, stamps, images, diagnostics."""
from __future__ import annotations

import difflib
import gc
import re
import sys
import threading
from typing import Any, Callable

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from .. import stop as stop_signals
from ..codec import encode_line
from ..diagnostics import Report


class ParameterError(ValueError):
    """A parameter value the node cannot start with."""


class AlreadyLogged(ParameterError):
    """A start-up failure the node has already logged: the process exits 2 without saying it twice."""


def declare(node: Node, name: str, default: Any, description: str,
            range_: tuple[float, float] | None = None, choices: tuple[str, ...] | None = None,
            runtime: bool = False) -> Any:
    """Declare a parameter with a descriptor, read it back, and check it against its range/choices.

    Parameters are read-only unless ``runtime``: then the node applies a new value (see
    :func:`apply_at_runtime`), so ``ros2 param set`` either takes effect or is refused, never ignored."""
    descriptor = ParameterDescriptor(description=description, read_only=not runtime)
    if range_ is not None and isinstance(default, float):
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(range_[0]),
                                                              to_value=float(range_[1]))]
    elif range_ is not None and isinstance(default, int) and not isinstance(default, bool):
        descriptor.integer_range = [IntegerRange(from_value=int(range_[0]), to_value=int(range_[1]))]
    if choices:
        descriptor.additional_constraints = f"one of: {', '.join(choices)}"
    try:
        value = node.declare_parameter(name, default, descriptor).value
    except Exception as exc:  # rclpy raises several types for out-of-range or mistyped overrides
        raise ParameterError(f"parameter {name!r}: {exc}") from None
    if choices and value not in choices:
        raise ParameterError(f"parameter {name!r} must be one of {choices}, got {value!r}")
    return value


def apply_at_runtime(node: Node, handlers: dict[str, Callable[[Any], Callable[[], None]]]) -> None:
    """Apply ``ros2 param set`` through ``handlers``: each checks a new value and returns what
    commits it, or raises ValueError with the reason to refuse it.  A request is applied whole or
    not at all.  Register after every declaration (rclpy runs these callbacks on declaring too)."""
    def on_set(params: list[Parameter]) -> SetParametersResult:
        try:
            commits = [handlers[p.name](p.value) for p in params if p.name in handlers]
        except (ValueError, RuntimeError, OSError) as exc:
            node.get_logger().warn(f"parameter change refused: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        for commit in commits:
            commit()
        if commits:
            node.get_logger().info("applied " + ", ".join(f"{p.name}={p.value!r}" for p in params if p.name in handlers))
        return SetParametersResult(successful=True)
    node.add_on_set_parameters_callback(on_set)


def wait_acked(publishers, stop: threading.Event, timeout_s: float = 10.0) -> bool:
    """Wait until every reliable subscriber has acknowledged what ``publishers`` sent, in 0.1 s
    slices so a stop request is honoured at once; False on stop or after ``timeout_s``."""
    from rclpy.duration import Duration
    slices = max(1, int(timeout_s / 0.1))
    for _ in range(slices):
        if stop.is_set():
            return False
        if all(pub.wait_for_all_acked(Duration(seconds=0.1)) for pub in publishers):
            return True
    return False


def qos(reliability: str, depth: int) -> QoSProfile:
    """``reliable``/``best_effort``; depth 0 means keep all (DDS flow control, nothing overwritten)."""
    if reliability not in ("reliable", "best_effort"):
        raise ParameterError(f"qos_reliability must be 'reliable' or 'best_effort', got {reliability!r}")
    if depth < 0:
        raise ParameterError(f"qos_depth must be >= 0, got {depth}")
    return QoSProfile(
        history=HistoryPolicy.KEEP_ALL if depth == 0 else HistoryPolicy.KEEP_LAST,
        depth=max(depth, 1),
        reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
    )


def to_ns(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def from_ns(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def line_image(header: Header, samples, encoding: str) -> Image:
    """A one-row Image from ``(bands, width)`` samples in the encoding's band order."""
    step, data = encode_line(samples, encoding)
    msg = Image(header=header, height=1, width=samples.shape[-1], encoding=encoding,
                is_bigendian=0, step=step)
    msg.data = data
    return msg


def status_name(node: Node, name: str) -> str:
    """``name`` with the node's full name, so that two pipelines in two namespaces never merge in
    a diagnostics aggregator: ``scannernet_ros: segmenter (/pushbroom/segmenter)``."""
    return f"{name} ({node.get_fully_qualified_name()})"


def short_status_name(name: str, namespace: str) -> str | None:
    """The name without its node suffix when the node is in ``namespace``; else None."""
    m = re.fullmatch(r"(.*) \((/.*)/[^/]+\)", name)
    if m and (m[2] == namespace.rstrip("/") or (namespace == "/" and m[2] == "")):
        return m[1]
    return None


def refuse_sim_time(value: bool):
    """``use_sim_time`` applies at start-up only: switched on at runtime without a /clock, every
    timer of the node would stop, /diagnostics with them, while lines are still answered."""
    raise ValueError("use_sim_time applies at start-up only (-p use_sim_time:=true); it cannot be changed at runtime")


def diagnostic_array(node: Node, name: str, report: Report) -> DiagnosticArray:
    status = DiagnosticStatus(level=bytes([report.level]), name=status_name(node, name), message=report.message,
                              hardware_id=node.get_fully_qualified_name(),
                              values=[KeyValue(key=k, value=v) for k, v in report.values.items()])
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = node.get_clock().now().to_msg()
    return msg


def make_executor() -> Executor:
    """A SingleThreadedExecutor.

    rclpy's C++ EventsExecutor (``rclpy.experimental``) costs less per callback, but in the Jazzy
    wheels it aborts the process when SIGINT lands inside a callback (``pybind11::error_already_set``)
    and cannot deliver message info (the segmenter's arrival times): a node that ends on Ctrl-C
    with exit 0 and counts its queue honestly is worth the extra few tens of microseconds.
    """
    return SingleThreadedExecutor()


def spin_until(executor: Executor, stop: threading.Event | None = None, node: Node | None = None) -> None:
    """Run callbacks until shutdown, ``stop``, or ``node`` setting ``exit_code`` (its job is done);
    ``spin_once`` in a loop so either is seen within 0.1 s."""
    while rclpy.ok() and not (stop is not None and stop.is_set()) \
            and getattr(node, "exit_code", None) is None:
        executor.spin_once(timeout_sec=0.1)


def report_unknown_overrides(node: Node) -> list[str]:
    """Log every parameter override that names no declared parameter, with the closest name.

    rclpy keeps overrides for undeclared names without a word, so a misspelt ``-p treshold:=0.7``
    would otherwise run with the default.  (rclpy exposes the overrides only as this attribute.)"""
    declared = [name for name in node._parameters]
    unknown = sorted(set(node._parameter_overrides) - set(declared))
    for name in unknown:
        close = difflib.get_close_matches(name, declared, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else f"; declared: {', '.join(sorted(declared))}"
        node.get_logger().error(f"parameter override {name!r} matches no parameter of this node{hint}")
    return unknown


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    """Spin one node until SIGINT/SIGTERM or until it sets ``exit_code``.

    Exit status: the node's ``exit_code`` (0 when stopped by a signal), 2 for a bad start-up
    parameter or file (one clear line).  Signals only request a stop (see :mod:`..stop`): the
    node's threads end in ``destroy_node`` before the context is shut down."""
    stop = stop_signals.install()
    if stop.is_set():
        return 0
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as exc:  # noqa: BLE001 - rcl reports malformed --ros-args as RCLError
        print(f"[ERROR] cannot start: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    stop_signals.running()
    node = None
    try:
        node = factory()
        report_unknown_overrides(node)
        # Everything alive now (rclpy, the model) lives as long as the node.  Frozen, a full
        # collection no longer walks it: unfrozen, one took 84 ms in the segmenter, 19 lines at 225 Hz.
        gc.freeze()
        executor = make_executor()
        executor.add_node(node)
        spin_until(executor, stop, node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    except AlreadyLogged:
        return 2
    except (ParameterError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"[ERROR] {exc}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return getattr(node, "exit_code", None) or 0


class NodeThreads:
    """Spin each node on its own executor (see :func:`make_executor`) in its own thread.

    This is how several nodes share one process here: rclpy's MultiThreadedExecutor busy-loops
    while a callback runs (ros2/rclpy#1452, fixed after the Jazzy wheels), which starves the
    very callbacks it should run.  One executor per node keeps nodes concurrent without it.
    """

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self._stop = threading.Event()
        self._spinning = []
        for node in nodes:
            executor = make_executor()
            executor.add_node(node)
            thread = threading.Thread(target=spin_until, args=(executor, self._stop),
                                      name=f"spin_{node.get_name()}", daemon=True)
            self._spinning.append((node, executor, thread))
        for _, _, thread in self._spinning:
            thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        for node, executor, thread in self._spinning:
            thread.join(timeout=2.0)
            executor.remove_node(node)
            node.destroy_node()

    def __enter__(self) -> "NodeThreads":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
