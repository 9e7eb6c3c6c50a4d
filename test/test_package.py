"""The package as colcon and ROS users see it."""
import ast
import re
import subprocess
import sys

from catkin_pkg.package import parse_package

from conftest import REPO


def test_package_xml_parses_and_matches_setup():
    pkg = parse_package(str(REPO / "package.xml"))
    assert pkg.package_format == 3
    assert pkg.get_build_type() == "ament_python"
    setup = (REPO / "setup.py").read_text()
    assert re.search(rf'version="{re.escape(pkg.version)}"', setup)
    import scannernet_ros
    assert scannernet_ros.__version__ == pkg.version
    deps = {d.name for d in pkg.exec_depends}
    assert {"rclpy", "sensor_msgs", "std_msgs", "std_srvs", "diagnostic_msgs", "launch",
            "launch_ros", "python3-numpy"} <= deps


def test_ros_wheels_are_not_hard_requirements():
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    kw = {k.arg: k.value for k in call.keywords}
    required = ast.literal_eval(kw["install_requires"])
    assert not [r for r in required if r.startswith("ros-")]
    assert "torch==2.13.0" not in required


def test_scripts_install_where_ros2_run_looks():
    cfg = (REPO / "setup.cfg").read_text()
    assert "script_dir=$base/lib/scannernet_ros" in cfg
    assert "install_scripts=$base/lib/scannernet_ros" in cfg
    assert (REPO / "resource" / "scannernet_ros").is_file()


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO / ".ci" / "run").read_text()
    assert "make test" in (REPO / "README.md").read_text()


def test_models_command_prints_the_zoo():
    out = subprocess.run([sys.executable, "-m", "scannernet_ros.cli", "models"], check=True,
                         capture_output=True, text=True).stdout
    assert "| scannernet       | 3     | 4,521" in out
    assert "1,717" in out and "1,409" in out and "1,471" in out
