"""Helpers for tests that run real rclpy nodes."""
from __future__ import annotations

import shutil
import subprocess
import time

import numpy as np
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from scannernet_ros.tools.bench_ros import executable as installed
from scannernet_ros.nodes.ros_common import from_ns, line_image
from scannernet_ros.pacing import poll_until as wait_until  # noqa: F401 - the tests' name for it


def params(**values) -> list[Parameter]:
    return [Parameter(k, value=v) for k, v in values.items()]


def image(stamp_ns: int, samples: np.ndarray, encoding: str, frame_id: str = "test_frame", **override) -> Image:
    msg = line_image(Header(stamp=from_ns(stamp_ns), frame_id=frame_id), samples, encoding)
    for k, v in override.items():
        setattr(msg, k, v)
    return msg


def executable(name: str) -> str:
    """The installed console script, as `ros2 run` would start it."""
    found = installed(name)
    assert shutil.which(found), f"console script {name!r} is not installed (pip install -e ., or colcon build)"
    return found


def start(name: str, namespace: str, **parameters) -> subprocess.Popen:
    """The node in a process group of its own, as a terminal or ``ros2 launch`` starts it, so a
    test can signal the group as a terminal's Ctrl-C does."""
    args = [executable(name), "--ros-args", "-r", f"__ns:=/{namespace}"]
    for k, v in parameters.items():
        args += ["-p", f"{k}:={v}"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=terminal_signals)


def terminal_signals() -> None:
    """SIGINT at its default action, as in a terminal (a run started in a script's background
    inherits it ignored, which would hide what a real Ctrl-C does)."""
    import signal
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def handling_signals(pid: int, timeout: float = 30.0) -> bool:
    """Wait until the process catches SIGTERM: the node's own code has installed its handlers
    (Python itself catches only SIGINT, so before that a signal is the interpreter's business)."""
    from pathlib import Path
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
        if caught & (1 << (15 - 1)):
            return True
        time.sleep(0.005)
    return False


def stop(proc: subprocess.Popen) -> str:
    import signal
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.communicate()[0] if proc.stdout else ""


def call(client, request, timeout: float = 10.0, attempts: int = 5):
    """A service call that is safe to repeat (get a state, set a parameter to a value, reset),
    repeated until it is answered: right after discovery the server's reply writer may not yet
    have matched this client, and DDS then drops the first replies."""
    for _ in range(attempts):
        response = client.call(request, timeout_sec=timeout)
        if response is not None:
            return response
    raise AssertionError(f"{client.srv_name}: no answer to {attempts} calls of {timeout} s")


def prime(pub, recorder, stamp_ns: int, samples: np.ndarray, encoding: str, timeout: float = 20.0) -> None:
    """Send the line stamped ``stamp_ns`` until its mask comes back.  Discovery is seen on each
    side at its own time: until the segmenter's mask writer has matched the recorder too, masks
    published in between go nowhere.  A mask that came back proves the whole path is matched."""
    end = time.monotonic() + timeout
    while stamp_ns not in recorder.stamps:
        assert time.monotonic() < end, "no mask came back: the pipeline never matched"
        pub.publish(image(stamp_ns, samples, encoding))
        wait_until(lambda: stamp_ns in recorder.stamps, 1.0)
