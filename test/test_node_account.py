"""One account of every line offered to the segmenter, across lifecycle transitions, model swaps and
resets: each line counted once, no phantom drops, frames that never span a reset or a swap."""
from __future__ import annotations

import numpy as np
import pytest

from ros_helpers import call, image, params, wait_until
from scannernet_ros.nodes.ros_common import qos

PERIOD = 4_444_444   # 225 lines/s, the segmenter's default line rate
W = 32


def _line(i: int, **override):
    rng = np.random.default_rng(i)
    return image(1_000_000_000 + i * PERIOD, rng.integers(5000, 40000, (4, W), dtype=np.uint16), "16UC4", **override)


@pytest.fixture
def live(ros, random_weights, request):
    """A segmenter, a recorder and a sender in one process; yields them while they spin."""
    import rclpy
    from sensor_msgs.msg import Image

    from scannernet_ros.nodes.recorder import Recorder
    from scannernet_ros.nodes.ros_common import NodeThreads
    from scannernet_ros.nodes.segmenter import Segmenter

    ns = f"account_{request.node.name.split('[')[0][-20:]}"
    overrides = dict(model=str(random_weights), diagnostics_period_s=0.1, frame_lines=4, reset_gap_lines=0,
                     **getattr(request, "param", {}))
    segmenter = Segmenter(namespace=ns, parameter_overrides=params(**overrides))
    recorder = Recorder(namespace=ns, gt_topic=None)
    sender = rclpy.create_node("sender", namespace=ns)
    pub = sender.create_publisher(Image, "scanline", qos("reliable", 0))
    with NodeThreads([segmenter, recorder, sender]):
        assert wait_until(lambda: pub.get_subscription_count() >= 1, 20)
        yield segmenter, recorder, sender, pub


def _send(pub, lines, settle=lambda: True):
    for i in lines:
        pub.publish(_line(i))


def _lines_in(segmenter, n: int) -> bool:
    return wait_until(lambda: segmenter.counters.lines_in >= n, 10)


@pytest.mark.parametrize("live", [{"autostart": False}], indirect=True)
def test_one_account_across_unconfigured_inactive_and_active(live):
    from std_srvs.srv import Trigger
    segmenter, recorder, sender, pub = live
    client = sender.create_client(Trigger, "segmenter/reset")
    assert client.wait_for_service(10)
    answer = call(client, Trigger.Request())
    assert answer is not None and not answer.success and "not configured" in answer.message

    _send(pub, range(0, 5))                          # unconfigured: taken in, not answered
    assert _lines_in(segmenter, 5)
    segmenter.trigger_configure()
    segmenter.trigger_activate()
    assert wait_until(lambda: recorder.connected(), 10)
    _send(pub, range(5, 10))                         # answered
    assert recorder.wait_for(5, 10)
    segmenter.trigger_deactivate()
    _send(pub, range(10, 50))                        # inactive: 40 lines
    assert _lines_in(segmenter, 50)
    segmenter.trigger_activate()
    _send(pub, range(50, 55))
    assert recorder.wait_for(10, 10)
    c = segmenter.counters
    assert (c.lines_in, c.lines_out, c.dropped) == (55, 10, 0), c
    assert dict(c.unanswered) == {"unconfigured": 5, "inactive": 40}
    assert c.resets["inactive"] == 1                 # the state after the gap starts from zeros, once
    segmenter.trigger_deactivate()
    segmenter.trigger_cleanup()                      # the account outlives cleanup and a new configure
    segmenter.trigger_configure()
    assert segmenter.core.counters is c and c.lines_in == 55


def test_malformed_stamps_are_rejected_and_counted(live):
    segmenter, recorder, sender, pub = live
    _send(pub, range(3))
    bad = _line(3)
    bad.header.stamp.nanosec = 1_500_000_000
    pub.publish(bad)
    _send(pub, range(4, 6))
    assert recorder.wait_for(5, 10)
    c = segmenter.counters
    assert c.rejected["malformed_stamp"] == 1 and c.dropped == 1 and c.lines_in == 6


def test_a_reset_and_a_model_swap_each_end_the_cloud_cover_frame(live, random_weights, tmp_path):
    import shutil

    from rclpy.parameter import Parameter
    from std_srvs.srv import Trigger
    segmenter, recorder, sender, pub = live
    client = sender.create_client(Trigger, "segmenter/reset")
    assert client.wait_for_service(10) and wait_until(lambda: recorder.connected(), 10)
    assert wait_until(lambda: segmenter.cover_pub.get_subscription_count() >= 1, 10)
    _send(pub, range(0, 2))
    assert recorder.wait_for(2, 10)
    assert call(client, Trigger.Request()).success
    _send(pub, range(2, 6))
    assert recorder.wait_for(6, 10)
    _send(pub, range(6, 8))
    assert recorder.wait_for(8, 10)
    other = tmp_path / "other.safetensors"
    shutil.copy(random_weights, other)
    assert segmenter.set_parameters([Parameter("model", value=str(other))])[0].successful
    _send(pub, range(13, 17))                        # 5 lines lost right across the swap
    assert recorder.wait_for(12, 10)
    assert wait_until(lambda: len(recorder.cover) >= 4, 10), recorder.cover
    assert [int(f["lines"]) for f in recorder.cover[:4]] == [2, 4, 2, 4]
    assert segmenter.counters.dropped == 5


def test_use_sim_time_cannot_be_switched_on_at_runtime(live):
    from rclpy.parameter import Parameter
    segmenter, *_ = live
    result = segmenter.set_parameters([Parameter("use_sim_time", value=True)])[0]
    assert not result.successful and "start-up" in result.reason
