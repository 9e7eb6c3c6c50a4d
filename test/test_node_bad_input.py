"""Malformed scanlines sent to a live segmenter: each counted under its reason, none lost or invented."""
from __future__ import annotations

import numpy as np

from ros_helpers import call, image, params, wait_until
from scannernet_ros.nodes.ros_common import qos

PERIOD = 4_444_444
W = 64


def _valid(i: int, width: int = W):
    rng = np.random.default_rng(i)
    return image(1_000_000_000 + i * PERIOD, rng.integers(5000, 40000, (4, width), dtype=np.uint16), "16UC4")


def _bad_cases():
    """(reason counted, message) for each kind of malformed line."""
    ok = _valid(0)
    tall = image(0, np.zeros((4, W), np.uint16), "16UC4")
    tall.height = 2
    short = image(0, np.zeros((4, W), np.uint16), "16UC4")
    short.data = bytes(short.data)[:-3]
    nan = np.full((3, W), 0.2, np.float32)
    nan[1, 7] = np.nan
    absurd = np.full((3, W), 0.2, np.float32)
    absurd[0, 3] = 3e38   # finite, so only the range check can catch it
    unknown = image(0, np.zeros((3, W), np.uint8), "rgb8")
    unknown.encoding = "yuv422"
    return [
        ("height", tall),
        ("encoding", unknown),
        ("data_length", short),
        ("band_count", image(0, np.zeros((1, W), np.uint8), "mono8")),
        ("non_finite", image(0, nan, "32FC3")),
        ("out_of_range", image(0, absurd, "32FC3")),
        ("step", image(0, np.zeros((4, W), np.uint16), "16UC4", step=ok.step - 2)),
    ]


def test_live_segmenter_counts_bad_lines_and_answers_every_valid_one(ros, random_weights):
    import rclpy
    from sensor_msgs.msg import Image
    from std_srvs.srv import Trigger

    from scannernet_ros.nodes.recorder import Recorder
    from scannernet_ros.nodes.ros_common import NodeThreads
    from scannernet_ros.nodes.segmenter import STATUS_NAME, Segmenter

    ns = "badinput"
    segmenter = Segmenter(namespace=ns, parameter_overrides=params(model=str(random_weights), diagnostics_period_s=0.2))
    recorder = Recorder(namespace=ns, gt_topic=None)
    sender = rclpy.create_node("sender", namespace=ns)
    pub = sender.create_publisher(Image, "scanline", qos("reliable", 0))
    client = sender.create_client(Trigger, "segmenter/reset")
    with NodeThreads([segmenter, recorder, sender]):
        assert wait_until(lambda: pub.get_subscription_count() >= 1
                          and recorder.connected(), 20)
        sent = []
        i = 0
        for reason, bad in _bad_cases():
            for _ in range(3):
                msg = _valid(i)
                pub.publish(msg)
                sent.append(1_000_000_000 + i * PERIOD)
                i += 1
            pub.publish(bad)
        # width change mid-scene: answered, and the state is reset (counted)
        pub.publish(_valid(i, width=W + 16))
        sent.append(1_000_000_000 + i * PERIOD)
        # stamp going backwards: answered, state reset (counted)
        pub.publish(_valid(2, width=W + 16))
        sent.append(1_000_000_000 + 2 * PERIOD)
        # reset service while lines flow
        assert client.wait_for_service(10)
        response = call(client, Trigger.Request())
        assert response is not None and response.success
        for j in range(3, 23):  # continue the restarted schedule: no gap, no further reset
            pub.publish(_valid(j, width=W + 16))
            sent.append(1_000_000_000 + j * PERIOD)
        assert recorder.wait_for(len(sent), 20), f"{len(recorder.stamps)} of {len(sent)} valid lines answered"
        assert wait_until(lambda: recorder.status_values(STATUS_NAME).get("lines out") == str(len(sent)), 5)
        values = recorder.status_values(STATUS_NAME)
        level = recorder.statuses[STATUS_NAME].level

    assert recorder.stamps == sent  # every valid line exactly once, in order; nothing invented
    counters = segmenter.core.counters
    assert dict(counters.rejected) == {reason: 1 for reason, _ in _bad_cases()}
    assert dict(counters.resets) == {"width_change": 1, "stamp_backwards": 1, "request": 1}
    assert values["rejected"] == str(len(_bad_cases()))
    assert values["rejected non_finite"] == "1" and values["resets stamp_backwards"] == "1"
    assert level in (b"\x00", b"\x01", b"\x02")


def test_reset_service_means_next_line_starts_from_zero_state(random_weights):
    """After reset, a line's output equals that of a fresh segmenter."""
    from scannernet_ros.codec import decode_line
    from scannernet_ros.streaming import LineSegmenter
    warm = LineSegmenter.from_file(str(random_weights))
    for i in range(20):
        warm.process_image(_valid(i), i * PERIOD)
    probe = decode_line(_valid(99))
    without_reset = warm.process(probe, 20 * PERIOD).copy()
    warm.reset()
    after_reset = warm.process(probe, 21 * PERIOD)
    fresh = LineSegmenter.from_file(str(random_weights)).process(probe, 0)
    np.testing.assert_array_equal(after_reset, fresh)
    assert not np.array_equal(without_reset, fresh)
