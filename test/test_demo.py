"""`make demo` runs `scannernet demo`: the whole pipeline over real rclpy, a summary and a PNG."""
import platform
import subprocess
import sys

import pytest
from PIL import Image

from conftest import BIOME, needs_biome


def _demo(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scannernet_ros.tools.cli", "demo", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_demo_runs_the_pipeline_and_writes_the_png(tmp_path, random_weights):
    result = _demo("--source", "synthetic", "--model", str(random_weights), "--width", "96", "--length", "150",
                   "--line-rate", "0", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "lines in 150, out 150, received downstream 150" in result.stdout
    assert "brightness threshold   IoU" in result.stdout and "end-to-end latency" in result.stdout
    assert f"ground truth | {random_weights} mask" in result.stdout   # the caption names the model
    png = Image.open(tmp_path / "demo.png")
    assert png.size == (3 * 96 + 2 * 4, 150)  # input | ground truth | mask


def test_the_default_demo_is_the_shipped_real_landsat_8_patch(tmp_path):
    result = _demo("--line-rate", "0", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert "scene l8_grasscrops_02_0608 (256 px x 256 lines) through scannernet" in out
    assert "lines in 256, out 256, received downstream 256" in out
    assert "scannernet             IoU" in out and "brightness threshold   IoU" in out
    assert "in the shipped weights' training data" in out and "stepper " in out


def test_a_run_without_the_compiled_kernel_says_it_fell_back_to_numpy():
    code = ("import sys; sys.modules['scannernet_ros._linestep'] = None; "
            "from scannernet_ros.streaming import LineSegmenter; "
            "print(LineSegmenter.from_file('scannernet').step_in_use())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.startswith("numpy (compiled kernel not built"), out


def test_the_compiled_step_names_the_instruction_set_it_was_built_for():
    """What a team checks on a board: the diagnostics' stepper value says NEON there, AVX2 or
    AVX-512 on x86 (a generic build would run, slower, and say so)."""
    from scannernet_ros import stepper
    if stepper._linestep is None:
        pytest.skip(f"the compiled kernel is not built here: {stepper.KERNEL_MISSING}")
    from scannernet_ros.streaming import LineSegmenter
    machine = platform.machine()
    expected = {"aarch64": {"NEON"}, "x86_64": {"AVX-512", "AVX2", "AVX", "SSE"}}.get(machine)
    used = LineSegmenter.from_file("scannernet").step_in_use()
    assert used == f"kernel (compiled ScannerNet step, {stepper._linestep.ISA})"
    assert expected is None or stepper._linestep.ISA in expected


@needs_biome
def test_the_swir_variant_runs_the_pipeline_on_five_band_lines(tmp_path):
    """The shipped SWIR variant through camera -> segmenter -> waterfall over rclpy on 16UC5 lines of
    an L8 Biome patch (the only source with SWIR1)."""
    result = _demo("--source", str(BIOME / "val" / "Images" / "Water_11_0728.tif"), "--model", "scannernet_swir",
                   "--encoding", "16UC5", "--line-rate", "0", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "through scannernet_swir" in result.stdout
    assert "lines in 256, out 256, received downstream 256, rejected 0" in result.stdout
