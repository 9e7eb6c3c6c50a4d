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
    out = subprocess.run([sys.executable, "-m", "scannernet_ros.tools.cli", "models"], check=True,
                         capture_output=True, text=True).stdout
    assert "| scannernet       | 4,521" in out
    assert "1,717" in out and "1,409" in out and "1,471" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert "| none " in rows["cunetpp"] and "yes (red, green, blue)" in rows["scannernet"]   # which have weights
    assert "threshold" in out and "cross-validated" in out


def _imports(path, package: str) -> list[tuple[str, bool]]:
    """(absolute module, at module level) for every import of the package in one source file."""
    tree = ast.parse(path.read_text())
    top_level = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, id(node) in top_level))
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in top_level) for a in node.names]
    return [(n, top) for n, top in found if n.startswith("scannernet_ros")]


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ("tools", "learning", "nodes", "scenes") else "core"


def test_imports_go_one_way_and_form_no_cycle():
    """tools -> learning, nodes, core; nodes -> core; learning -> core; the core reaches learning
    only lazily (CUDA), and nothing below tools imports a tool."""
    root = REPO / "scannernet_ros"
    graph = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(REPO).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = module if rel.name == "__init__" else module.rsplit(".", 1)[0]
        graph[module] = _imports(path, package)
    allowed = {"core": {"core", "scenes"}, "scenes": {"core", "scenes"}, "learning": {"core", "scenes", "learning"},
               "nodes": {"core", "scenes", "nodes"}, "tools": {"core", "scenes", "learning", "nodes", "tools"}}
    wrong = []
    for module, imports in graph.items():
        for target, top in imports:
            lazy_ok = _layer(module) == "core" and _layer(target) == "learning" and not top
            if _layer(target) not in allowed[_layer(module)] and not lazy_ok and target != "scannernet_ros":
                wrong.append(f"{module} -> {target}")
    assert not wrong, wrong
    # no cycle among module-level imports
    edges = {m: {t for t, top in imps if top and t in graph and t != m} for m, imps in graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for t in edges[m]:
            assert state.get(t) != 1, f"import cycle: {' -> '.join(trail + [m, t])}"
            if t not in state:
                visit(t, trail + [m])
        state[m] = 2
    for m in edges:
        if m not in state:
            visit(m, [])
