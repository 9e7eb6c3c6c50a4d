"""The on-board pipeline as real rclpy nodes over real DDS."""
from __future__ import annotations

import time

import numpy as np
import torch

from ros_helpers import params, start, stop, wait_until
from scannernet_ros.camera import scan
from scannernet_ros.codec import encode_line
from scannernet_ros.scenes.synthetic import SyntheticScene
from scannernet_ros.streaming import LineSegmenter

LINES, WIDTH = 1000, 256


class _Msg:
    """The fields of a one-row Image, for feeding the offline path the same bytes."""

    def __init__(self, samples, encoding):
        self.height, self.width, self.encoding, self.is_bigendian = 1, samples.shape[1], encoding, 0
        self.step, self.data = encode_line(samples, encoding)


def test_in_process_pipeline_matches_offline_streaming(ros, random_weights):
    from scannernet_ros.nodes.pushbroom_camera import PushbroomCamera
    from scannernet_ros.nodes.recorder import Recorder
    from scannernet_ros.nodes.ros_common import NodeThreads
    from scannernet_ros.nodes.segmenter import STATUS_NAME, Segmenter
    from scannernet_ros.nodes.waterfall import WaterfallNode
    import rclpy
    from sensor_msgs.msg import Image

    ns = "inproc"
    segmenter = Segmenter(namespace=ns, parameter_overrides=params(model=str(random_weights), diagnostics_period_s=0.2))
    recorder = Recorder(namespace=ns)
    camera = PushbroomCamera(namespace=ns, parameter_overrides=params(
        width=WIDTH, length=LINES, seed=5, line_rate_hz=0.0, wait_for_subscribers=1, frame_id="test_frame"))
    waterfall = WaterfallNode(namespace=ns, parameter_overrides=params(rows=200, publish_rate_hz=20.0))
    viewer = rclpy.create_node("viewer", namespace=ns)
    pictures = []
    viewer.create_subscription(Image, "waterfall/image", pictures.append, 5)
    with NodeThreads([segmenter, recorder, waterfall, viewer, camera]):
        assert recorder.wait_for(LINES, 60), f"only {len(recorder.stamps)} mask lines arrived"
        time.sleep(0.3)  # a few more pictures after the last line
        assert pictures, "no waterfall image"
        assert wait_until(lambda: recorder.status_values(STATUS_NAME).get("lines out") == str(LINES), 5)
        status = recorder.statuses[STATUS_NAME]
    stamps = recorder.stamps
    assert len(stamps) == LINES and len(set(stamps)) == LINES and stamps == sorted(stamps)
    assert set(np.diff(stamps)) == {camera.period_ns}  # the acquisition schedule, untouched
    assert recorder.frame_ids == {"test_frame"}

    offline = LineSegmenter.from_file(str(random_weights))
    for line, stamp in zip(scan(SyntheticScene(WIDTH, LINES, seed=5), "16UC4"), stamps):
        expected = (offline.process_image(_Msg(line.samples, "16UC4"), stamp) >= 0.5) * 255
        np.testing.assert_array_equal(recorder.masks[stamp], expected)

    rows = pictures[-1].height  # the viewer is best effort: it may skip lines, never more than `rows`
    assert 0 < rows <= 200 and pictures[-1].width == WIDTH
    picture = np.frombuffer(bytes(pictures[-1].data), np.uint8).reshape(rows, WIDTH, 3)
    assert pictures[-1].encoding == "rgb8" and pictures[-1].header.frame_id == "test_frame"
    tinted = (picture[..., 0] > picture[..., 1] + 40) & (picture[..., 2] > picture[..., 1] + 40)
    assert tinted.any() and not tinted.all()  # cloud overlay where the masks said cloud

    values = {kv.key: kv.value for kv in status.values}
    assert values["lines in"] == str(LINES) and values["rejected"] == "0" and values["dropped (stamp gaps)"] == "0"
    assert values["device"] == "cpu" and values["width"] == str(WIDTH)
    assert values["model"] == str(random_weights)
    assert status.level in (b"\x00", b"\x01")


def test_across_processes_2000_lines_at_225_hz(ros, random_weights):
    from scannernet_ros.nodes.recorder import Recorder
    from scannernet_ros.nodes.ros_common import NodeThreads

    ns, lines = "xproc", 2000
    recorder = Recorder(namespace=ns, keep_lines=False)
    segmenter = start("segmenter", ns, model=random_weights)
    camera = None
    try:
        with NodeThreads([recorder]):
            assert wait_until(lambda: recorder.connected(), 30), stop(segmenter)
            camera = start("pushbroom_camera", ns, length=lines, width=384, line_rate_hz=225.0,
                           wait_for_subscribers=1, qos_reliability="reliable")
            assert recorder.wait_for(lines, 60), f"{len(recorder.stamps)} of {lines} mask lines arrived"
            stamps = list(recorder.stamps)
            latency_ms = np.asarray(recorder.latency_ns) / 1e6
    finally:
        logs = stop(segmenter) + (stop(camera) if camera else "")
    assert len(stamps) == lines, logs
    assert len(set(stamps)) == lines, "duplicated mask lines"
    assert stamps == sorted(stamps), "mask lines out of order"
    assert np.percentile(latency_ms, 50) < 1000, "pipeline fell far behind 225 lines/s"


def test_bad_parameter_is_a_clear_error_and_nonzero_exit(random_weights):
    for name, overrides, culprit in [
        ("segmenter", {"model": "no_such_model"}, "no_such_model"),
        ("segmenter", {"model": random_weights, "device": "tpu"}, "device"),
        ("segmenter", {"model": random_weights, "threshold": 1.5}, "threshold"),
        ("pushbroom_camera", {"line_rate_hz": -5.0}, "line_rate_hz"),
        ("pushbroom_camera", {"encoding": "yuv422"}, "encoding"),
        ("pushbroom_camera", {"source": "/nonexistent/scene.tif"}, "source"),
    ] + ([] if torch.cuda.is_available() else [("segmenter", {"model": random_weights, "device": "cuda"}, "CUDA")]):
        proc = start(name, "badparam", **overrides)
        try:
            out, _ = proc.communicate(timeout=30)
        finally:
            stop(proc)
        assert proc.returncode == 2, f"{name} {overrides}: exit {proc.returncode}\n{out}"
        assert "[ERROR]" in out and culprit in out, out
        assert "Traceback" not in out, out


def test_executor_starts_where_stderr_has_no_file_descriptor(ros, capsys):
    """Under capsys (as in notebooks) stderr has no file descriptor; nodes must still spin there."""
    import rclpy
    from rclpy.node import Node
    from std_msgs.msg import Header

    from scannernet_ros.nodes.ros_common import NodeThreads, make_executor

    assert type(make_executor()).__name__ == "SingleThreadedExecutor"  # see make_executor: events aborts on SIGINT
    talker, listener = Node("stderr_talker"), Node("stderr_listener")
    heard = []
    listener.create_subscription(Header, "stderr_probe", lambda msg: heard.append(msg.frame_id), 10)
    pub = talker.create_publisher(Header, "stderr_probe", 10)
    with NodeThreads([listener]):
        assert wait_until(lambda: pub.get_subscription_count() == 1, 10)
        pub.publish(Header(frame_id="heard"))
        assert wait_until(lambda: heard == ["heard"], 10)
    talker.destroy_node()
    assert rclpy.ok()
