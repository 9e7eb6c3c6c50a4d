"""Faults and load on live nodes: overload, a killed segmenter, a restarted source, unwritable paths."""
from __future__ import annotations

import signal
import time

import numpy as np
import pytest

from ros_helpers import image, params, start, stop, wait_until
from scannernet_ros.camera import scan
from scannernet_ros.codec import decode_line
from scannernet_ros.scenes.synthetic import SyntheticScene
from scannernet_ros.streaming import LineSegmenter


def _latencies_ms(recorder, stamps_from: int, stamps_to: int) -> list[float]:
    return [(lat / 1e6) for s, lat in zip(recorder.stamps, recorder.latency_ns) if stamps_from <= s < stamps_to]


def test_overload_with_best_effort_stays_current_counts_drops_and_recovers(ros, tmp_path):
    """A sender at about 10x what the segmenter sustains, sensor-data QoS: no backlog builds up.

    Once the load falls, what is measured is the segmenter: every line it answers comes at once
    (no backlog left over).  The test's own best-effort hop into it may lose a few lines on a
    loaded 2-core machine before the segmenter ever sees them, so the share answered is only
    bounded loosely (80 of 100); a segmenter still working off a backlog fails on latency."""
    import rclpy
    from sensor_msgs.msg import Image

    from scannernet_ros.learning.models import build_model
    from scannernet_ros.nodes.recorder import Recorder
    from scannernet_ros.nodes.ros_common import NodeThreads, qos
    from scannernet_ros.weights import ModelInfo, save_model

    heavy = tmp_path / "heavy.safetensors"  # a wide ScannerNet: a few ms per line, so 10x is reachable
    save_model(heavy, build_model("scannernet", hidden=(48, 48)), ModelInfo("scannernet", {"hidden": (48, 48), "kernel_size": 9}))
    ns, rate = "overload", 2000.0
    period = int(1e9 / rate)
    segmenter = start("segmenter", ns, model=heavy, qos_reliability="best_effort", qos_depth=2,
                      line_rate_hz=rate, reset_gap_lines=5, diagnostics_period_s=0.25)
    recorder = Recorder(namespace=ns, gt_topic=None, keep_lines=False)
    sender = rclpy.create_node("sender", namespace=ns)
    pub = sender.create_publisher(Image, "scanline", qos("best_effort", 2))
    payload = np.random.default_rng(0).integers(5000, 40000, (4, 384), dtype=np.uint16)
    try:
        with NodeThreads([recorder, sender]):
            assert wait_until(lambda: pub.get_subscription_count() >= 1 and recorder.connected(), 30)
            t0 = time.time_ns()

            # phase 1: 3 s at `rate`; phase 2: the load falls to 50 lines/s
            n = 3 * int(rate)
            for i in range(n):
                due = t0 + i * period
                while time.time_ns() < due:
                    time.sleep(0.0001)
                pub.publish(image(due, payload, "16UC4"))
            phase1_end = t0 + n * period
            for j in range(100):
                due = phase1_end + j * 40 * period
                while time.time_ns() < due:
                    time.sleep(0.0005)
                pub.publish(image(due, payload, "16UC4"))
            time.sleep(1.0)
            overload_latency = _latencies_ms(recorder, t0, phase1_end)
            recovered = [s for s in recorder.stamps if s >= phase1_end]
            values = recorder.status_values("scannernet_ros: segmenter")
    finally:
        logs = stop(segmenter)
    processed = len(overload_latency)
    assert 0 < processed < 0.5 * n, f"segmenter answered {processed} of {n}: not overloaded ({logs})"
    assert np.percentile(overload_latency, 90) < 250, "latency grew: a backlog built up under best effort"
    missing = sorted(set(range(100)) - {(s - phase1_end) // (40 * period) for s in recovered})
    assert len(recovered) >= 80, (f"only {len(recovered)} of 100 lines answered once the load fell; missing "
                                  f"{missing}; segmenter diagnostics {values}")
    after = _latencies_ms(recorder, phase1_end, phase1_end + 100 * 40 * period)
    assert np.percentile(after, 90) < 100, f"lines answered late once the load fell: p90 {np.percentile(after, 90):.0f} ms"
    assert int(values["dropped (stamp gaps)"]) > n // 2
    assert int(values.get("resets stamp_gap", "0")) > 0


def test_segmenter_killed_and_restarted_resumes_with_fresh_state(ros, random_weights):
    from scannernet_ros.nodes.recorder import Recorder
    from scannernet_ros.nodes.ros_common import NodeThreads

    ns, lines, width, seed = "restart", 20000, 128, 11  # long enough to outlast a restart; stopped early
    name = "scannernet_ros: segmenter"
    recorder = Recorder(namespace=ns, gt_topic=None)
    seg = start("segmenter", ns, model=random_weights, diagnostics_period_s=0.25)
    camera = seg2 = None
    try:
        with NodeThreads([recorder]):
            assert wait_until(lambda: recorder.connected(), 30)
            camera = start("pushbroom_camera", ns, width=width, length=lines, seed=seed, line_rate_hz=225.0,
                           wait_for_subscribers=1)
            assert recorder.wait_for(200, 30)
            seg.send_signal(signal.SIGKILL)
            seg.wait(10)
            time.sleep(0.5)  # masks the old process sent before it died have all arrived by now
            killed_at = len(recorder.stamps)
            assert camera.poll() is None, "camera died with the segmenter"
            # the last status the recorder holds is the dead process's until the new one's diagnostics
            # are matched, which can come well after its masks: wait for a status of the new state
            old_since = recorder.status_values(name)["state since stamp ns"]
            seg2 = start("segmenter", ns, model=random_weights, diagnostics_period_s=0.25)
            assert wait_until(lambda: len(recorder.stamps) > killed_at + 100, 30), "no masks after the restart"
            assert wait_until(lambda: recorder.status_values(name).get("state since stamp ns") != old_since
                              and int(recorder.status_values(name)["lines in"]) > 50, 10)
            status = recorder.status_values(name)
            stamps, masks = list(recorder.stamps), dict(recorder.masks)
    finally:
        stop(seg)
        stop(seg2) if seg2 else None
        stop(camera) if camera else None
    after = stamps[killed_at:]
    assert after == sorted(after) and len(set(after)) == len(after)
    # The new state starts at the first line the new process saw.  Its first masks may go out before
    # discovery has matched mask_line with the recorder (a volatile topic keeps nothing for late
    # subscribers), so the first mask received can come a little later than that line; and the
    # camera's writer may still hand the new reader lines the old process had already answered.  For
    # such a line whose new mask was lost, ``masks`` still holds the old process's mask: only masks
    # that arrived after the kill are the new process's and are compared.
    since, first = int(status["state since stamp ns"]), after[0]
    assert since <= first
    # the restarted segmenter starts from zero state: same masks as a fresh offline segmenter from that line
    period = 4_444_444
    t0 = stamps[0]  # the camera's first line: the recorder was listening before the camera started
    offline = LineSegmenter.from_file(str(random_weights))
    lines_by_index = {line.index: line for line in scan(SyntheticScene(width, lines, seed=seed), "16UC4")}
    checked, answered_after = 0, set(after)
    for idx in range(round((since - t0) / period), round((after[59] - t0) / period) + 1):
        s = t0 + idx * period
        expected = (offline.process(decode_line(image(s, lines_by_index[idx].samples, "16UC4")), s) >= 0.5) * 255
        if s in answered_after:
            np.testing.assert_array_equal(masks[s], expected)
            checked += 1
    assert checked >= 60


def test_source_restarted_stamps_go_backwards_and_reset_is_counted(ros, random_weights, tmp_path):
    from scannernet_ros.tools.convert import convert
    from scannernet_ros.nodes.bag_player import BagPlayer
    from scannernet_ros.nodes.recorder import Recorder
    from scannernet_ros.nodes.ros_common import NodeThreads
    from scannernet_ros.nodes.segmenter import Segmenter

    convert("synthetic:1:40", str(tmp_path / "bags"))
    ns = "backwards"
    segmenter = Segmenter(namespace=ns, parameter_overrides=params(model=str(random_weights)))
    recorder = Recorder(namespace=ns, gt_topic=None)
    with NodeThreads([segmenter, recorder]):
        for run in (1, 2):
            player = BagPlayer(namespace=ns, parameter_overrides=params(bag=str(tmp_path / "bags"), rate=0.0))
            with NodeThreads([player]):
                assert recorder.wait_for(40 * run, 30)
    counters = segmenter.core.counters
    assert counters.resets["stamp_backwards"] == 1 and counters.lines_out == 80
    first, second = recorder.stamps[:40], recorder.stamps[40:]
    assert first == second  # the replayed lines, each answered again


def test_unwritable_report_path_is_a_clear_error_and_the_node_keeps_running(ros, random_weights, tmp_path):
    from scannernet_ros.tools.convert import convert
    from scannernet_ros.nodes.bag_player import BagPlayer
    from scannernet_ros.nodes.evaluator import Evaluator
    from scannernet_ros.nodes.recorder import Recorder
    from scannernet_ros.nodes.ros_common import NodeThreads
    from scannernet_ros.nodes.segmenter import Segmenter

    convert("synthetic:1:8", str(tmp_path / "bags"))
    (tmp_path / "a_file").write_text("")
    target = tmp_path / "a_file" / "report.json"  # parent is a file: unwritable, even for root
    evaluator = Evaluator(namespace="unwritable", parameter_overrides=params(report_path=str(target), settle_s=0.1))
    recorder = Recorder(namespace="unwritable", gt_topic=None)
    segmenter = Segmenter(namespace="unwritable", parameter_overrides=params(model=str(random_weights)))
    player = BagPlayer(namespace="unwritable", parameter_overrides=params(bag=str(tmp_path / "bags"), rate=0.0,
                                                                          wait_for_subscribers=2))
    with NodeThreads([segmenter, evaluator, recorder, player]):
        assert wait_until(lambda: evaluator.report is not None, 30)
        assert wait_until(lambda: recorder.statuses.get("scannernet_ros: evaluator") is not None
                          and recorder.statuses["scannernet_ros: evaluator"].level == b"\x02", 5)
        message = recorder.statuses["scannernet_ros: evaluator"].message
    assert "cannot write report" in message and "a_file" in message
    assert not target.exists()


def test_full_disk_during_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    import safetensors.torch as writer

    import scannernet_ros.learning.train as training
    import scannernet_ros.weights as weights
    from scannernet_ros.learning.train import TrainConfig, train
    cfg = TrainConfig(model="scannernet_small", data=["synthetic:4:32"], batch_size=2, crop=16, strip=8,
                      steps_per_epoch=1, max_epochs=1, out=str(tmp_path / "run"), device="cpu")
    train(cfg, log=lambda *_: None)
    before = {name: (tmp_path / "run" / name).read_bytes() for name in ("last.safetensors", "train_state.safetensors")}
    real = writer.save_file

    def full(*args, **kwargs):
        real(*args, **kwargs)  # the bytes land in the temporary file...
        raise OSError(28, "No space left on device")  # ...then the disk fills up
    monkeypatch.setattr(writer, "save_file", full)      # weights files
    monkeypatch.setattr(training, "save_file", full)    # the checkpoint
    cfg.max_epochs, cfg.resume = 2, True
    with pytest.raises(OSError, match="No space left"):
        train(cfg, log=lambda *_: None)
    for name, data in before.items():
        assert (tmp_path / "run" / name).read_bytes() == data
    weights.load_model(tmp_path / "run" / "last.safetensors")
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("argv,culprit", [
    (["evaluate", "--models", "{weights}", "--data", "{bad_tif}"], "unreadable"),
    (["evaluate", "--models", "{corrupt}", "--data", "synthetic:1:8"], "corrupt.safetensors"),
    (["evaluate", "--models", "{weights}", "--data", "{truncated_bag}"], "unreadable bag"),
    (["train", "--data", "/no/such/folder", "--out", "{tmp}/run"], "/no/such/folder"),
])
def test_cli_failures_are_one_clear_line(tmp_path, random_weights, argv, culprit):
    import subprocess
    import sys
    from scannernet_ros.bags import write_scene_bag
    bad_tif = tmp_path / "scene.tif"
    bad_tif.write_bytes(b"II*\x00garbage")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(random_weights.read_bytes()[:200])
    write_scene_bag(tmp_path / "bag", SyntheticScene(8, 200))
    mcap = next((tmp_path / "bag").glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[:1000])
    subs = {"weights": random_weights, "bad_tif": bad_tif, "corrupt": corrupt, "truncated_bag": tmp_path / "bag", "tmp": tmp_path}
    argv = [a.format(**subs) for a in argv]
    result = subprocess.run([sys.executable, "-m", "scannernet_ros.tools.cli", *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert culprit in result.stderr and "Traceback" not in result.stderr, result.stderr
