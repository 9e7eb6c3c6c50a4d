"""The launch files under a real ``ros2 launch``, as a user runs them from a terminal.

A terminal's Ctrl-C is SIGINT to every process of the foreground group, and ``ros2 launch``
forwards one more to each node: each launch here runs in its own session (a process group, as a
terminal gives it) and is stopped with ``killpg(SIGINT)``.  These tests need the ROS 2 command
line (a colcon workspace; ``colcon test`` runs them, and so does CI), and skip without it.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from ros_helpers import handling_signals, terminal_signals

pytestmark = pytest.mark.skipif(
    shutil.which("ros2") is None or importlib.util.find_spec("launch_ros") is None,
    reason="needs the ROS 2 command line (ros2 launch, launch_ros): run under a sourced colcon workspace")

DIED = re.compile(r"process has died|exit code -\d|Traceback|Fatal Python error")
# launch's asyncio child watcher sometimes loses a child's exit status under load ("Unknown child
# process pid N, will report returncode 255", then "process has died [pid N, exit code 255"): the
# status was never seen, so such a line says nothing about the node.
LOST_STATUS = re.compile(r"Unknown child process pid (\d+), will report returncode 255")


def deaths(out: str) -> list[str]:
    """Lines reporting a node death, leaving out those whose exit status launch lost."""
    lost = set(LOST_STATUS.findall(out))
    return [line for line in out.splitlines() if DIED.search(line) and not LOST_STATUS.search(line)
            and not any(f"[pid {pid}, exit code 255" in line for pid in lost)]


def ros2_launch(launch_file: str, *args: str) -> subprocess.Popen:
    """``ros2 launch scannernet_ros <launch_file> args...`` in a session of its own (as a terminal
    runs a foreground job), on this test session's private DDS domain."""
    return subprocess.Popen(["ros2", "launch", "scannernet_ros", launch_file, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, preexec_fn=terminal_signals)


def finish(proc: subprocess.Popen, timeout: float = 60.0) -> str:
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out = proc.communicate()[0]
        pytest.fail(f"the launch did not end within {timeout:.0f} s:\n{out[-3000:]}")


def node_pids(proc: subprocess.Popen) -> list[int]:
    """The node processes a launch started (its children running this package's executables)."""
    import psutil
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        nodes = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)
                 if any("lib/scannernet_ros/" in part for part in c.cmdline())]
        if len(nodes) >= 3:
            return nodes
        time.sleep(0.05)
    return nodes


def wait_for(proc: subprocess.Popen, pattern: str, timeout: float = 60.0) -> str:
    """Read the launch's output until ``pattern`` appears; what was read."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if re.search(pattern, line):
            return "".join(seen)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"{pattern!r} never appeared:\n{''.join(seen)[-3000:]}")


@pytest.mark.parametrize("after", ["start-up", "running"])
def test_pipeline_survives_terminal_ctrl_c_every_node_exits_0(after, random_weights):
    """Ctrl-C as a terminal sends it (the group, then launch's forwarded SIGINT), during the nodes'
    start-up and while masks flow: every node reports a clean finish, none dies by a signal.
    Start-up here begins once every node's own code holds the signals; before that (the interpreter
    starting, the console-script wrapper scanning every installed package's metadata) a signal is
    the interpreter's default action, whatever the node does."""
    for attempt in range(5):
        proc = ros2_launch("pipeline.launch.py", f"model:={random_weights}", f"namespace:=ctrlc{attempt}")
        if after == "start-up":   # while the nodes import rclpy, numpy and the model and start
            head = wait_for(proc, r"\[waterfall-\d+\]: process started")
            assert all(handling_signals(pid) for pid in node_pids(proc)), head
            time.sleep(0.1 * attempt)
        else:
            head = wait_for(proc, r"segmenter.*(active|activated)")
            time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)
        out = head + finish(proc)
        assert not deaths(out), out[-4000:]
        lost = len(LOST_STATUS.findall(out))
        if after == "running":
            assert out.count("process has finished cleanly") + lost == 3, out[-4000:]
        assert "ending the launch" not in out, out[-4000:]     # a Ctrl-C is not blamed on a node


def test_params_file_sets_what_a_launch_argument_also_sets(tmp_path, random_weights):
    """threshold: 0.9 in a params file holds when threshold:= is not given, and loses when it is."""
    import yaml
    from pathlib import Path
    config = yaml.safe_load((Path(__file__).parent.parent / "config" / "pipeline.yaml").read_text())
    config["/**/segmenter"]["ros__parameters"].update(threshold=0.9, model=str(random_weights))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(config))
    for args, expected in (((), 0.9), (("threshold:=0.7",), 0.7)):
        proc = ros2_launch("pipeline.launch.py", f"params_file:={params}", "namespace:=paramsfile", *args)
        out = wait_for(proc, r"segmenter.*threshold")
        os.killpg(proc.pid, signal.SIGINT)
        out += finish(proc)
        assert re.search(rf"threshold[ =:]+{expected}\b", out), out[-3000:]


def test_a_dead_node_ends_the_launch_with_exit_1():
    proc = ros2_launch("pipeline.launch.py", "model:=/nonexistent/weights.safetensors", "namespace:=dead")
    out = finish(proc)
    assert proc.returncode == 1, out[-3000:]
    assert "the segmenter exited with status 2" in out, out[-3000:]
    assert "weights.safetensors" in out


@pytest.fixture(scope="module")
def good_bag(tmp_path_factory):
    from scannernet_ros.bags import write_scene_bag
    from scannernet_ros.scenes.synthetic import SyntheticScene
    path = tmp_path_factory.mktemp("bags") / "good"
    write_scene_bag(path, SyntheticScene(64, 48, seed=3))
    return path


def test_replay_eval_exit_code_is_the_verdict_ok(good_bag, random_weights, tmp_path):
    report = tmp_path / "report.json"
    proc = ros2_launch("replay_eval.launch.py", f"bag:={good_bag}", f"model:={random_weights}",
                       f"report:={report}", "namespace:=replay_ok")
    out = finish(proc, 120)
    assert proc.returncode == 0 and report.is_file(), out[-3000:]
    assert "the evaluator wrote an ok report" in out


def test_replay_eval_fail_report_gives_a_nonzero_exit(random_weights, tmp_path):
    """A scene with a line of NaN: the segmenter refuses it, its mask never comes, the report FAILs."""
    from scannernet_ros.bags import write_scene_bag
    from scannernet_ros.scenes import ArrayScene
    rho = np.full((4, 24, 32), 0.2, np.float32)
    rho[:, 10] = np.nan
    mask = np.zeros((24, 32), np.uint8)
    write_scene_bag(tmp_path / "nan", ArrayScene("nan_row", rho, mask), encoding="32FC4")
    report = tmp_path / "report.json"
    proc = ros2_launch("replay_eval.launch.py", f"bag:={tmp_path / 'nan'}", f"model:={random_weights}",
                       f"report:={report}", "namespace:=replay_fail")
    out = finish(proc, 120)
    assert proc.returncode == 1, out[-3000:]
    assert "the evaluator exited with status 1" in out and '"FAIL"' in report.read_text()


def test_replay_eval_wrong_bag_path_ends_with_nonzero_exit(random_weights, tmp_path):
    proc = ros2_launch("replay_eval.launch.py", f"bag:={tmp_path / 'no_such_bag'}", f"model:={random_weights}",
                       f"report:={tmp_path / 'r.json'}", "namespace:=replay_wrong")
    out = finish(proc, 60)
    assert proc.returncode == 1, out[-3000:]
    assert "the bag player exited with status 2" in out


def test_the_pipeline_ends_with_exit_0_when_a_scene_that_does_not_loop_ends(tmp_path, random_weights):
    import yaml
    from pathlib import Path
    config = yaml.safe_load((Path(__file__).parent.parent / "config" / "pipeline.yaml").read_text())
    config["/**/pushbroom_camera"]["ros__parameters"].update(loop=False, line_rate_hz=0.0)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(config))
    proc = ros2_launch("pipeline.launch.py", f"params_file:={params}", "source:=demo", f"model:={random_weights}",
                       "namespace:=scene_end")
    out = finish(proc, 120)
    assert proc.returncode == 0, out[-3000:]
    assert "the camera finished its scene: ending the launch" in out and not deaths(out), out[-3000:]
