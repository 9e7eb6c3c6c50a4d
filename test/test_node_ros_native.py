"""The nodes as ROS tools use them, over real rclpy and real processes: parameter services,
lifecycle services, signals to the process, and the evaluator's exit code."""
from __future__ import annotations

import random
import signal
import subprocess
import time

import numpy as np
import pytest

from ros_helpers import call, executable, handling_signals, image, prime, start, stop, wait_until
from scannernet_ros.nodes.ros_common import qos

PERIOD = 4_444_444
W = 48


def _line(i: int):
    rng = np.random.default_rng(i)
    return image(1_000_000_000 + i * PERIOD, rng.integers(5000, 40000, (4, W), dtype=np.uint16), "16UC4")


def _set(node, service: str, **values):
    """Set parameters through the node's real SetParameters service; the results."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    client = node.create_client(SetParameters, service)
    assert client.wait_for_service(20), f"{service} not available"
    request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    response = call(client, request)   # setting the same values again is harmless
    node.destroy_client(client)
    return response.results


def test_parameters_apply_at_runtime_or_are_refused(ros, random_weights):
    import rclpy
    from sensor_msgs.msg import Image

    from scannernet_ros.nodes.recorder import Recorder
    from scannernet_ros.nodes.ros_common import NodeThreads

    ns = "params"
    seg = start("segmenter", ns, model=random_weights)
    recorder = Recorder(namespace=ns, gt_topic=None)
    sender = rclpy.create_node("param_sender", namespace=ns)
    pub = sender.create_publisher(Image, "scanline", qos("reliable", 0))
    sent = 0

    def answer(count: int = 3) -> list[np.ndarray]:
        nonlocal sent
        first = sent
        for _ in range(count):
            pub.publish(_line(sent))
            sent += 1
        wanted = [1_000_000_000 + i * PERIOD for i in range(first, sent)]
        assert wait_until(lambda: all(w in recorder.masks for w in wanted), 20), \
            f"{sum(w in recorder.masks for w in wanted)} of {count} lines answered"
        return [recorder.masks[w] for w in wanted]

    try:
        with NodeThreads([recorder, sender]):
            assert wait_until(lambda: recorder.connected() and pub.get_subscription_count() >= 1, 30), stop(seg)
            prime(pub, recorder, 1_000, np.full((4, W), 9000, np.uint16), "16UC4")
            answer()
            [ok] = _set(sender, "segmenter/set_parameters", threshold=0.0)
            assert ok.successful, ok.reason
            assert all((m == 255).all() for m in answer()), "threshold 0.0 must make every pixel cloud"
            [ok] = _set(sender, "segmenter/set_parameters", threshold=1.0)
            assert ok.successful and all((m < 255).any() for m in answer())

            [refused] = _set(sender, "segmenter/set_parameters", model="/nonexistent/weights.safetensors")
            assert not refused.successful
            assert "model" in refused.reason and "scannernet_small" in refused.reason, refused.reason
            assert len(answer()) == 3, "the old model must keep answering"

            [read_only] = _set(sender, "segmenter/set_parameters", device="cuda")
            assert not read_only.successful and "read-only" in read_only.reason.lower(), read_only.reason
            [out_of_range] = _set(sender, "segmenter/set_parameters", threshold=1.5)
            assert not out_of_range.successful

            results = _set(sender, "segmenter/set_parameters", model="scannernet_small", threshold=0.0)
            assert all(r.successful for r in results), [r.reason for r in results]
            assert all((m == 255).all() for m in answer())
    finally:
        logs = stop(seg)
    assert seg.returncode == 0, logs
    assert "Traceback" not in logs, logs


def test_misspelt_override_is_reported_with_the_closest_name(random_weights):
    proc = start("segmenter", "typo", model=random_weights, treshold=0.7)
    try:
        assert wait_until(lambda: proc.poll() is None and time.sleep(0.5) is None, 5)
        time.sleep(3)
    finally:
        out = stop(proc)
    assert "'treshold'" in out and "did you mean 'threshold'" in out, out
    assert proc.returncode == 0


def test_lifecycle_transitions_through_the_services(ros, random_weights):
    import rclpy
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from sensor_msgs.msg import Image

    from scannernet_ros.nodes.recorder import Recorder
    from scannernet_ros.nodes.ros_common import NodeThreads
    from scannernet_ros.nodes.segmenter import STATUS_NAME

    ns = "managed"
    seg = start("segmenter", ns, model=random_weights, autostart=False, diagnostics_period_s=0.2)
    recorder = Recorder(namespace=ns, gt_topic=None)
    client = rclpy.create_node("lifecycle_client", namespace=ns)
    pub = client.create_publisher(Image, "scanline", qos("reliable", 0))
    change = client.create_client(ChangeState, "segmenter/change_state")
    get = client.create_client(GetState, "segmenter/get_state")

    def state() -> int:
        return call(get, GetState.Request()).current_state.id

    def transition(tid: int) -> bool:
        response = change.call(ChangeState.Request(transition=Transition(id=tid)), timeout_sec=30)
        assert response is not None, "change_state did not answer"
        return response.success

    try:
        with NodeThreads([recorder, client]):
            assert change.wait_for_service(30) and get.wait_for_service(30), stop(seg)
            assert state() == State.PRIMARY_STATE_UNCONFIGURED
            # a transition the state machine refuses changes nothing: repeat it until change_state
            # answers, so the real transitions below are not sent before its replies can arrive
            refused = call(change, ChangeState.Request(transition=Transition(id=Transition.TRANSITION_ACTIVATE)))
            assert not refused.success and state() == State.PRIMARY_STATE_UNCONFIGURED
            assert transition(Transition.TRANSITION_CONFIGURE) and state() == State.PRIMARY_STATE_INACTIVE
            assert wait_until(lambda: pub.get_subscription_count() >= 1, 20)
            for i in range(5):  # inactive: counted, not answered
                pub.publish(_line(i))
            assert wait_until(lambda: recorder.status_values(STATUS_NAME).get("lines not answered (inactive)") == "5", 10)
            assert recorder.stamps == []
            assert transition(Transition.TRANSITION_ACTIVATE) and state() == State.PRIMARY_STATE_ACTIVE
            assert wait_until(lambda: recorder.connected(), 20)
            for i in range(5, 10):
                pub.publish(_line(i))
            assert recorder.wait_for(5, 20), "an active segmenter answers every line"
            assert transition(Transition.TRANSITION_DEACTIVATE) and state() == State.PRIMARY_STATE_INACTIVE
            assert transition(Transition.TRANSITION_CLEANUP) and state() == State.PRIMARY_STATE_UNCONFIGURED
            assert transition(Transition.TRANSITION_CONFIGURE) and state() == State.PRIMARY_STATE_INACTIVE
    finally:
        logs = stop(seg)
    assert seg.returncode == 0 and "Traceback" not in logs, logs


def test_autostart_with_a_bad_model_exits_2_naming_parameter_and_choices():
    proc = start("segmenter", "badmodel", model="nonexistent")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "parameter 'model'" in out and "scannernet_small" in out and "Traceback" not in out, out
    assert out.count("parameter 'model'") == 1, f"the error is printed more than once:\n{out}"
    assert "cunetpp" not in out, "lists a model the segmenter cannot run"


NODES = {
    "segmenter": {},
    "pushbroom_camera": {"length": 100000, "width": 384},
    "waterfall": {},
    "evaluator": {"report_path": "/tmp/scannernet_sigint_report.json"},
}


def _interrupt(name: str, ns: str, delay: float, sig: int, **params) -> tuple[int, str, float]:
    """Start the node, and ``delay`` s after its own code has taken over the signals, send ``sig``."""
    proc = start(name, ns, **params)
    assert handling_signals(proc.pid), f"{name} never installed its signal handlers"
    time.sleep(delay)
    sent = time.monotonic()
    proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return -999, out, 10.0
    return proc.returncode, out, time.monotonic() - sent


@pytest.mark.parametrize("name", sorted(NODES))
def test_sigint_or_sigterm_at_random_moments_exit_0_without_traceback(name, random_weights, tmp_path):
    """During start-up (from the moment the node's own code holds the signals: before that they
    are the interpreter's and the console-script wrapper's) and while running (the camera
    publishing as fast as it can read)."""
    params = dict(NODES[name])
    if name == "segmenter":
        params["model"] = random_weights
    rng = random.Random(name)
    for k in range(10):
        sig = signal.SIGINT if k % 2 == 0 else signal.SIGTERM
        rc, out, took = _interrupt(name, f"sig_{name}_{k}", rng.uniform(0.0, 2.5), sig, **params)
        assert rc == 0, f"{name}: exit {rc} after {signal.Signals(sig).name}\n{out}"
        assert "Traceback" not in out and "Fatal Python error" not in out and "terminate called" not in out, out
        assert took < 2.0, f"{name} took {took:.2f} s to stop"


@pytest.mark.parametrize("name", sorted(NODES))
def test_ctrl_c_from_a_terminal_then_the_one_launch_forwards_exits_0(name, random_weights):
    """A terminal's Ctrl-C (SIGINT to the process group) and, 0 to 200 ms later, the SIGINT that
    ``ros2 launch`` forwards: the second lands during shutdown and must not kill the node (-2)."""
    import os
    params = dict(NODES[name])
    if name == "segmenter":
        params["model"] = random_weights
    for k, spacing in enumerate((0.0, 0.02, 0.05, 0.1, 0.2)):
        proc = start(name, f"term_{name}_{k}", **params)
        assert handling_signals(proc.pid), f"{name} never installed its signal handlers"
        time.sleep(1.5 if k % 2 else 0.05)   # running, or still starting
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(spacing)
        try:
            proc.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        assert proc.returncode == 0, f"{name}: exit {proc.returncode}, second SIGINT {1e3 * spacing:.0f} ms later\n{out}"
        assert "Traceback" not in out and "Fatal Python error" not in out, out


def test_three_nodes_interrupted_together_while_lines_flow(random_weights):
    ns = "together"
    procs = [start("segmenter", ns, model=random_weights), start("waterfall", ns),
             start("pushbroom_camera", ns, length=100000, width=384, wait_for_subscribers=1)]
    time.sleep(4.0)
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        out, _ = p.communicate(timeout=10)
        assert p.returncode == 0 and "Traceback" not in out and "Fatal" not in out, out


def test_bag_player_exits_cleanly_on_sigint(tmp_path):
    from scannernet_ros.tools.convert import convert
    convert("synthetic:1:64", str(tmp_path / "bags"))
    rc, out, took = _interrupt("bag_player", "sig_bag", 1.5, signal.SIGINT, bag=str(tmp_path / "bags"))
    assert rc == 0 and "Traceback" not in out and took < 2.0, out


def _write_string_bag(path):
    """A bag whose scanline topic carries std_msgs/String: foreign data on a known topic."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from scannernet_ros.bags import SCANLINE
    ts = get_typestore(Stores.ROS2_JAZZY)
    String = ts.types["std_msgs/msg/String"]
    with Writer(path, version=9) as writer:
        conn = writer.add_connection(SCANLINE, "std_msgs/msg/String", typestore=ts)
        for i in range(5):
            writer.write(conn, 1_000 + i, ts.serialize_cdr(String(data="not an image"), "std_msgs/msg/String"))


def _replay(tmp_path, random_weights, bags) -> tuple[int, dict, str]:
    import json
    report = tmp_path / "report.json"
    ns = f"replay_{abs(hash(str(tmp_path))) % 10**8}"
    seg = start("segmenter", ns, model=random_weights)
    ev = start("evaluator", ns, report_path=report, settle_s=2.0)
    player = start("bag_player", ns, bag=bags, rate=0.0, wait_for_subscribers=2)
    try:
        out, _ = ev.communicate(timeout=90)
    finally:
        logs = stop(player) + stop(seg)
    assert report.is_file(), f"no report (exit {ev.returncode}):\n{out}\n{logs}"
    return ev.returncode, json.loads(report.read_text()), out + logs


def test_evaluator_exit_code_tells_pass_and_fail(tmp_path, random_weights):
    from scannernet_ros.tools.convert import convert
    bags = tmp_path / "bags"
    convert("synthetic:2:32", str(bags))
    rc, report, logs = _replay(tmp_path, random_weights, bags)
    assert rc == 0 and report["status"] == "ok" and report["lines_paired"] == 64, logs

    _write_string_bag(bags / "zz_foreign")
    rc, report, logs = _replay(tmp_path, random_weights, bags)
    assert rc == 1 and report["status"] == "FAIL", logs
    assert any("zz_foreign" in r and "std_msgs/msg/String" in r for r in report["reasons"]), report["reasons"]
    assert report["lines_paired"] == 64, ("the good bags still play", report["reasons"], logs)


def test_default_segmenter_loses_nothing_of_10000_unpaced_lines(ros, random_weights):
    """Its default queue (10,000 lines) holds a whole unpaced burst from a reliable publisher that
    keeps its lines until acknowledged; losses on the publisher's side would be counted as
    `lost (middleware)` through the message-lost event."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from scannernet_ros.nodes.recorder import Recorder
    from scannernet_ros.nodes.ros_common import NodeThreads

    ns, n = "burst", 10_000
    seg = start("segmenter", ns, model=random_weights)
    recorder = Recorder(namespace=ns, gt_topic=None, keep_lines=False)
    sender = rclpy.create_node("burst_sender", namespace=ns)
    pub = sender.create_publisher(Image, "scanline", QoSProfile(depth=n, reliability=ReliabilityPolicy.RELIABLE))
    lines = [image(1_000_000_000 + i * PERIOD, np.full((4, 384), 9000 + i % 500, np.uint16), "16UC4") for i in range(n)]
    try:
        with NodeThreads([recorder]):
            assert wait_until(lambda: recorder.connected() and pub.get_subscription_count() >= 1, 30), stop(seg)
            prime(pub, recorder, 1_000, np.full((4, 384), 9000, np.uint16), "16UC4")
            for msg in lines:
                pub.publish(msg)
            burst = lambda: [s for s in recorder.stamps if s != 1_000]  # noqa: E731
            assert wait_until(lambda: len(burst()) >= n, 120), f"{len(burst())} of {n} lines answered"
            stamps = burst()
    finally:
        logs = stop(seg)
    assert stamps == [1_000_000_000 + i * PERIOD for i in range(n)], logs


def test_reset_service_answers_every_one_of_1000_concurrent_calls(ros, random_weights):
    import rclpy
    from std_srvs.srv import Trigger

    from scannernet_ros.nodes.ros_common import NodeThreads

    ns = "resets"
    seg = start("segmenter", ns, model=random_weights)
    caller = rclpy.create_node("reset_caller", namespace=ns)
    client = caller.create_client(Trigger, "segmenter/reset", qos_profile=qos("reliable", 0))
    try:
        with NodeThreads([caller]):
            assert client.wait_for_service(30), stop(seg)
            assert call(client, Trigger.Request()).success   # the reply path is matched before the burst
            futures = [client.call_async(Trigger.Request()) for _ in range(1000)]
            assert wait_until(lambda: all(f.done() for f in futures), 60), \
                f"{sum(f.done() for f in futures)} of 1000 calls answered"
            assert all(f.result().success for f in futures)
    finally:
        logs = stop(seg)
    assert seg.returncode == 0, logs


def test_cloud_cover_per_frame_stamped_with_its_first_line(ros, random_weights):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from ros_helpers import params
    from scannernet_ros.nodes.ros_common import NodeThreads
    from scannernet_ros.nodes.segmenter import Segmenter

    ns = "cover"
    seg = Segmenter(namespace=ns, parameter_overrides=params(model=str(random_weights), frame_lines=4,
                                                             threshold=0.0, discard_above=0.7))
    listener = rclpy.create_node("cover_listener", namespace=ns)
    frames = []
    listener.create_subscription(DiagnosticArray, "cloud_cover",
                                 frames.append, 100)
    pub = listener.create_publisher(Image, "scanline", qos("reliable", 0))
    stamps = [i for i in range(10)] + [100, 101]       # a gap after line 9: that frame ends early
    with NodeThreads([seg, listener]):
        assert wait_until(lambda: pub.get_subscription_count() >= 1 and seg.cover_pub.get_subscription_count() >= 1, 20)
        for i in stamps:
            pub.publish(_line(i))
        assert wait_until(lambda: len(frames) >= 3, 20), f"{len(frames)} frames"
    got = [({kv.key: kv.value for kv in f.status[0].values}, f.header.stamp.sec * 10**9 + f.header.stamp.nanosec)
           for f in frames]
    first = [1_000_000_000 + i * PERIOD for i in (0, 4, 8)]
    assert [stamp for _, stamp in got[:3]] == first
    assert [v["lines"] for v, _ in got[:3]] == ["4", "4", "2"]       # the third ends at the stamp gap
    assert all(v["cloud fraction"] == "1.0000" and v["discard"] == "true" for v, _ in got[:3])
    assert got[0][0]["valid pixels"] == str(4 * W)


def test_cpu_segmenter_runs_where_importing_torch_fails(ros, random_weights, tmp_path):
    """The on-board CPU path needs no torch: a segmenter process in which `import torch` raises
    answers lines with the probabilities of the torch model's own step."""
    import os
    import sys

    import rclpy
    import torch
    from sensor_msgs.msg import Image

    from scannernet_ros.codec import decode_line
    from scannernet_ros.nodes.ros_common import NodeThreads
    from scannernet_ros.streaming import LineSegmenter

    blocker = tmp_path / "blocker" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch is blocked in this process')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), *sys.path])}
    ns = "notorch"
    proc = subprocess.Popen([executable("segmenter"), "--ros-args", "-r", f"__ns:=/{ns}", "-p", f"model:={random_weights}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    node = rclpy.create_node("notorch_probe", namespace=ns)
    got = {}
    node.create_subscription(Image, "probability_line", lambda m: got.__setitem__(
        m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, decode_line(m).samples[0].copy()), qos("reliable", 0))
    pub = node.create_publisher(Image, "scanline", qos("reliable", 0))
    lines = [_line(i) for i in range(40)]
    try:
        with NodeThreads([node]):
            assert wait_until(lambda: pub.get_subscription_count() >= 1 and node.count_publishers("probability_line") >= 1, 30), \
                stop(proc)
            time.sleep(0.5)
            for msg in lines:
                pub.publish(msg)
            assert wait_until(lambda: len(got) == len(lines), 30), f"{len(got)} of {len(lines)} lines answered"
    finally:
        logs = stop(proc)
    assert proc.returncode == 0 and "Traceback" not in logs, logs
    reference = LineSegmenter.from_file(str(random_weights), stepper="plain")   # torch's own step
    assert torch is not None
    for i, msg in enumerate(lines):
        expected = reference.process(decode_line(msg), 1_000_000_000 + i * PERIOD)
        np.testing.assert_allclose(got[1_000_000_000 + i * PERIOD], expected, atol=1e-6)
