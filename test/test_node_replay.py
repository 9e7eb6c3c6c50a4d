"""Replay evaluation over real rclpy equals the offline evaluation of the same bags."""
from __future__ import annotations

import json

from ros_helpers import params, wait_until
from scannernet_ros.tools.convert import convert
from scannernet_ros.tools.evaluate import evaluate


def test_replay_report_equals_offline_evaluation(ros, random_weights, tmp_path):
    from scannernet_ros.nodes.bag_player import BagPlayer
    from scannernet_ros.nodes.evaluator import Evaluator
    from scannernet_ros.nodes.ros_common import NodeThreads
    from scannernet_ros.nodes.segmenter import Segmenter

    bags = convert("synthetic:3:64", str(tmp_path / "bags"))
    assert len(bags) == 3
    offline = evaluate([str(random_weights)], [str(tmp_path / "bags")], tmp_path / "offline", panels=0,
                       log=lambda *_: None)["models"][str(random_weights)]

    ns = "replay"
    report_path = tmp_path / "replay.json"
    segmenter = Segmenter(namespace=ns, parameter_overrides=params(model=str(random_weights), qos_depth=0))
    evaluator = Evaluator(namespace=ns, parameter_overrides=params(report_path=str(report_path), settle_s=0.5))
    player = BagPlayer(namespace=ns, parameter_overrides=params(bag=str(tmp_path / "bags"), rate=0.0,
                                                                wait_for_subscribers=2))
    with NodeThreads([segmenter, evaluator, player]):
        assert wait_until(lambda: evaluator.report is not None, 60), "no report"
    report = json.loads(report_path.read_text())
    assert report["status"] == "ok" and report["lost_masks"] == 0
    assert report["lines_paired"] == 3 * 64
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # noqa: E731 (NaN-aware)
    assert same(report["scenes"], offline["scenes"])
    assert same(report["pooled"], offline["pooled"])
    assert same(report["per_scene_mean"], offline["per_scene_mean"])
    assert 0.05 < report["pooled"]["iou"] < 0.95  # both classes present: the comparison is not trivial
    resets = segmenter.core.counters.resets
    assert resets["stamp_gap"] + resets["stamp_jump"] == 2  # fresh state for each scene, like offline


def test_lost_masks_are_a_failure(ros, tmp_path):
    """A segmenter that answers only every other line: the report says FAIL and counts the rest."""
    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image

    from scannernet_ros.nodes.bag_player import BagPlayer
    from scannernet_ros.nodes.evaluator import Evaluator
    from scannernet_ros.nodes.ros_common import NodeThreads, line_image, qos

    convert("synthetic:1:16", str(tmp_path / "bags"))
    ns = "lost"
    lossy = rclpy.create_node("lossy_segmenter", namespace=ns)
    masks = lossy.create_publisher(Image, "mask_line", qos("reliable", 0))
    seen = []

    def answer_every_other(msg):
        seen.append(msg)
        if len(seen) % 2:
            masks.publish(line_image(msg.header, np.zeros(msg.width, np.uint8), "mono8"))
    lossy.create_subscription(Image, "scanline", answer_every_other, qos("reliable", 0))
    evaluator = Evaluator(namespace=ns, parameter_overrides=params(report_path=str(tmp_path / "r.json"), settle_s=0.3))
    player = BagPlayer(namespace=ns, parameter_overrides=params(bag=str(tmp_path / "bags"), rate=0.0, wait_for_subscribers=2))
    with NodeThreads([lossy, evaluator, player]):
        assert wait_until(lambda: evaluator.report is not None, 30)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == "FAIL" and report["lost_masks"] == 8 and report["lines_paired"] == 8


def test_evaluator_rejects_malformed_lines_instead_of_misreading_them(ros, tmp_path):
    """A mask line whose data does not match its step is counted, and the report fails."""
    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Empty

    from ros_helpers import image
    from scannernet_ros.nodes.bag_player import LATCHED
    from scannernet_ros.nodes.evaluator import STATUS_NAME, Evaluator
    from scannernet_ros.nodes.recorder import Recorder
    from scannernet_ros.nodes.ros_common import NodeThreads, qos

    ns = "malformed"
    evaluator = Evaluator(namespace=ns, parameter_overrides=params(report_path=str(tmp_path / "r.json"), settle_s=0.2))
    listener = Recorder(namespace=ns, gt_topic=None)
    sender = rclpy.create_node("sender", namespace=ns)
    masks = sender.create_publisher(Image, "mask_line", qos("reliable", 0))
    done = sender.create_publisher(Empty, "replay_done", LATCHED)
    with NodeThreads([evaluator, listener, sender]):
        assert wait_until(lambda: masks.get_subscription_count() >= 2, 10)
        truth = sender.create_publisher(Image, "gt_line", qos("reliable", 0))  # evaluator subscribes once masks connect
        assert wait_until(lambda: truth.get_subscription_count() >= 1, 10)
        good = image(1_000, np.full((1, 8), 255, np.uint8), "mono8")
        bad = image(2_000, np.full((1, 8), 255, np.uint8), "mono8")
        bad.data = bytes(bad.data)[:5]
        for stamp, msg in ((1_000, good), (2_000, bad)):
            truth.publish(image(stamp, np.full((1, 8), 255, np.uint8), "mono8"))
            masks.publish(msg)
        assert wait_until(lambda: evaluator.pairing.paired == 1 and sum(evaluator.rejected.values()) == 1, 10)
        done.publish(Empty())
        assert wait_until(lambda: evaluator.report is not None, 10)
        assert wait_until(lambda: STATUS_NAME in listener.statuses and listener.statuses[STATUS_NAME].level == b"\x02", 5)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["rejected_lines"] == {"mask_line data_length": 1}
    assert report["status"] == "FAIL" and report["lost_masks"] == 1 and report["lines_paired"] == 1
    assert listener.malformed == 1  # the recorder did not misread it either
