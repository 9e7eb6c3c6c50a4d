"""Long load test (`make soak`): 100,000 lines across processes with reliable QoS, none lost."""
import time

import pytest

from ros_helpers import start, stop

pytestmark = pytest.mark.soak


def test_100000_lines_reliable_across_processes(ros, random_weights, capsys):
    from scannernet_ros.nodes.recorder import Recorder
    from scannernet_ros.nodes.ros_common import NodeThreads
    from scannernet_ros.pacing import poll_until
    ns, lines = "soak", 100_000
    recorder = Recorder(namespace=ns, gt_topic=None, keep_lines=False)
    segmenter = start("segmenter", ns, model=random_weights, qos_depth=0)
    camera = None
    try:
        with NodeThreads([recorder]):
            poll_until(recorder.connected, 30)
            camera = start("pushbroom_camera", ns, width=384, length=lines, line_rate_hz=0.0,
                           wait_for_subscribers=1, qos_depth=0)
            t0 = time.monotonic()
            assert recorder.wait_for(lines, 1800), f"{len(recorder.stamps)} of {lines} arrived"
            elapsed = time.monotonic() - t0
            stamps = list(recorder.stamps)
    finally:
        stop(camera) if camera else None
        stop(segmenter)
    assert len(stamps) == lines and len(set(stamps)) == lines and stamps == sorted(stamps)
    with capsys.disabled():
        print(f"\n{lines} lines in {elapsed:.1f} s: {lines / elapsed:.0f} lines/s, none lost, none duplicated, in order")
