"""Launch files and config checked as far as this machine allows (launch_ros has no wheels here).

Statically: every executable a launch file names is an installed console script, every launch
argument is used, and the files compile.  With real rcl: config/pipeline.yaml is loaded through
``--params-file`` into the real nodes, which must declare every key it sets.
"""
from __future__ import annotations

import ast

import pytest
import yaml

from conftest import REPO

LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))


def _console_scripts() -> set[str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    scripts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and " = scannernet_ros." in node.value:
            scripts.add(node.value.split(" = ")[0])
    return scripts


def _node_calls(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Node":
            yield {k.arg: k.value for k in node.keywords}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_names_installed_executables(path):
    compile(path.read_text(), str(path), "exec")
    calls = list(_node_calls(path))
    assert calls, "no Node actions"
    for kw in calls:
        assert ast.literal_eval(kw["package"]) == "scannernet_ros"
        assert ast.literal_eval(kw["executable"]) in _console_scripts()


def _mappings(tree) -> dict[str, dict]:
    """Module-level ``NAME = {argument: ((parameter, ...), type)}`` tables of a launch file."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            out[node.targets[0].id] = {ast.literal_eval(k): ast.literal_eval(v.elts[0])
                                       for k, v in zip(node.value.keys, node.value.values)}
    return out


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_arguments_are_all_used(path):
    tree = ast.parse(path.read_text())
    declared = {ast.literal_eval(n.args[0]) for n in ast.walk(tree)
                if isinstance(n, ast.Call) and getattr(n.func, "id", "") in ("DeclareLaunchArgument", "override")
                and isinstance(n.args[0], ast.Constant)}
    used = {ast.literal_eval(n.args[0]) for n in ast.walk(tree)
            if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "LaunchConfiguration"}
    for table in _mappings(tree).values():
        used |= set(table)
    assert declared == used


def _node_classes():
    from scannernet_ros.nodes.bag_player import BagPlayer
    from scannernet_ros.nodes.evaluator import Evaluator
    from scannernet_ros.nodes.pushbroom_camera import PushbroomCamera
    from scannernet_ros.nodes.segmenter import Segmenter
    from scannernet_ros.nodes.waterfall import WaterfallNode
    return {"pushbroom_camera": PushbroomCamera, "segmenter": Segmenter, "waterfall": WaterfallNode,
            "bag_player": BagPlayer, "evaluator": Evaluator}


@pytest.mark.parametrize("config_name", ["pipeline.yaml", "replay_eval.yaml"])
def test_config_loads_into_the_real_nodes(config_name, random_weights, tmp_path):
    import rclpy
    from scannernet_ros.bags import write_scene_bag
    from scannernet_ros.scenes.synthetic import SyntheticScene
    write_scene_bag(tmp_path / "bag", SyntheticScene(8, 4))
    config = yaml.safe_load((REPO / "config" / config_name).read_text())
    overrides = {"segmenter": {"model": str(random_weights)}, "pushbroom_camera": {"length": 10},
                 "bag_player": {"bag": str(tmp_path / "bag")}, "evaluator": {"report_path": str(tmp_path / "r.json")}}
    for name, values in overrides.items():
        if f"/**/{name}" in config:
            config[f"/**/{name}"]["ros__parameters"].update(values)
    params_file = tmp_path / config_name
    params_file.write_text(yaml.safe_dump(config))
    rclpy.init(args=["--ros-args", "--params-file", str(params_file), "-r", "__ns:=/pushbroom"])
    try:
        for name, cls in _node_classes().items():
            if f"/**/{name}" not in config:
                continue
            node = cls()
            try:
                declared = set(node._parameters) - {"use_sim_time", "start_type_description_service"}
                wanted = config[f"/**/{name}"]["ros__parameters"]
                assert set(wanted) <= declared, f"{name}: undeclared {set(wanted) - declared}"
                for key, value in wanted.items():
                    assert node.get_parameter(key).value == value, f"{name}.{key} not loaded from config"
            finally:
                node.destroy_node()
    finally:
        rclpy.try_shutdown()


def test_line_rate_feeds_camera_and_segmenter():
    tables = _mappings(ast.parse((REPO / "launch" / "pipeline.launch.py").read_text()))
    assert tables["CAMERA"]["line_rate"] == ("line_rate_hz", "stamp_rate_hz")
    assert tables["SEGMENTER"]["line_rate"] == ("line_rate_hz",)


def test_every_launch_file_ends_when_a_node_it_needs_exits():
    """Which exits end a launch (the behaviour itself runs under ``ros2 launch`` in test_launch.py)."""
    for path, needed in (("pipeline.launch.py", {"camera", "segmenter", "waterfall"}),
                         ("replay_eval.launch.py", {"evaluator", "segmenter", "player"})):
        tree = ast.parse((REPO / "launch" / path).read_text())
        ends = {ast.unparse(n.args[0]) for n in ast.walk(tree)
                if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "end_when_exits"}
        assert ends == needed, path
