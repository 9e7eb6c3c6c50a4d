"""The README documents every executable, parameter, topic and launch argument the code has."""
import ast
import re

import pytest

from conftest import REPO

README = (REPO / "README.md").read_text()


def _declared_parameters():
    for path in sorted((REPO / "scannernet_ros" / "nodes").glob("*.py")):
        for match in re.finditer(r'declare\(self, "([a-z_]+)"', path.read_text()):
            yield path.stem, match[1]


@pytest.mark.parametrize("node,parameter", list(_declared_parameters()))
def test_every_parameter_is_documented(node, parameter):
    assert f"`{parameter}`" in README or f"`{parameter}`," in README or re.search(rf"`[^`]*\b{parameter}\b[^`]*`", README)


def test_every_executable_and_subcommand_is_documented():
    tree = ast.parse((REPO / "setup.py").read_text())
    scripts = [n.value.split(" = ")[0] for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str) and " = scannernet_ros." in n.value]
    for script in scripts:
        assert script in README, script
    for command in ("models", "demo", "train", "evaluate", "cv", "ship", "convert", "bench", "export"):
        assert f"scannernet {command}" in README or f"make {command}" in README, command


def test_every_topic_and_launch_argument_is_documented():
    for topic in re.findall(r'create_publisher\(\w+, "([^"]+)"', "".join(
            p.read_text() for p in (REPO / "scannernet_ros" / "nodes").glob("*.py"))):
        assert f"`{topic}`" in README, topic
    for launch in (REPO / "launch").glob("*.launch.py"):
        for arg in re.findall(r'DeclareLaunchArgument\("([a-z_]+)"', launch.read_text()):
            assert f"`{arg}`" in README or f"{arg}:=" in README, f"{launch.name}: {arg}"
