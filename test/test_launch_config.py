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


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_arguments_are_all_used(path):
    tree = ast.parse(path.read_text())
    declared = {ast.literal_eval(n.args[0]) for n in ast.walk(tree)
                if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "DeclareLaunchArgument"}
    used = {ast.literal_eval(n.args[0]) for n in ast.walk(tree)
            if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "LaunchConfiguration"}
    assert declared == used


def _node_classes():
    from scannernet_ros.nodes.pushbroom_camera import PushbroomCamera
    from scannernet_ros.nodes.segmenter import Segmenter
    from scannernet_ros.nodes.waterfall import WaterfallNode
    return {"pushbroom_camera": PushbroomCamera, "segmenter": Segmenter, "waterfall": WaterfallNode}


def test_pipeline_config_loads_into_the_real_nodes(random_weights, tmp_path):
    import rclpy
    config = yaml.safe_load((REPO / "config" / "pipeline.yaml").read_text())
    config["/**/segmenter"]["ros__parameters"]["model"] = str(random_weights)
    config["/**/pushbroom_camera"]["ros__parameters"]["length"] = 10
    params_file = tmp_path / "pipeline.yaml"
    params_file.write_text(yaml.safe_dump(config))
    rclpy.init(args=["--ros-args", "--params-file", str(params_file), "-r", "__ns:=/pushbroom"])
    try:
        for name, cls in _node_classes().items():
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
