"""Helpers for tests that run real rclpy nodes."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from scannernet_ros.codec import encode_line
from scannernet_ros.nodes.ros_common import from_ns


def params(**values) -> list[Parameter]:
    return [Parameter(k, value=v) for k, v in values.items()]


def image(stamp_ns: int, samples: np.ndarray, encoding: str, frame_id: str = "test_frame", **override) -> Image:
    step, data = encode_line(samples, encoding)
    msg = Image(header=Header(stamp=from_ns(stamp_ns), frame_id=frame_id), height=1,
                width=samples.shape[-1], encoding=encoding, is_bigendian=0, step=step)
    msg.data = data
    for k, v in override.items():
        setattr(msg, k, v)
    return msg


def wait_until(predicate, timeout: float, interval: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def executable(name: str) -> str:
    """The installed console script, as `ros2 run` would start it."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    assert found, f"console script {name!r} is not installed (pip install -e .)"
    return found


def start(name: str, namespace: str, **parameters) -> subprocess.Popen:
    args = [executable(name), "--ros-args", "-r", f"__ns:=/{namespace}"]
    for k, v in parameters.items():
        args += ["-p", f"{k}:={v}"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(proc: subprocess.Popen) -> str:
    import signal
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.communicate()[0] if proc.stdout else ""
