"""The README and docs/ document every executable, parameter, topic and launch argument the code has;
the README leads: both commands in its first 40 lines, an accuracy figure beside the threshold's in
its first 60, at most 250 lines."""
import ast
import re

import pytest

from conftest import REPO

FRONT = (REPO / "README.md").read_text()
README = FRONT + "".join(p.read_text() for p in sorted((REPO / "docs").glob("*.md")))


def test_the_readme_leads_and_stays_short():
    lines = FRONT.splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines"
    head40, head60 = "\n".join(lines[:40]), "\n".join(lines[:60])
    assert "make demo" in head40 and "make test" in head40
    assert "threshold" in head60 and re.search(r"\|\s*threshold[^|]*\|\s*\d+\.\d", head60)
    for page in re.findall(r"\]\((docs/[a-z_]+\.md)", FRONT):
        assert (REPO / page).is_file(), page


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
        for arg in re.findall(r'(?:DeclareLaunchArgument|override)\("([a-z_]+)"', launch.read_text()):
            assert f"`{arg}`" in README or f"{arg}:=" in README, f"{launch.name}: {arg}"
