"""`make demo` runs `scannernet demo`: the whole pipeline over real rclpy, a summary and a PNG."""
import subprocess
import sys

from PIL import Image


def test_demo_runs_the_pipeline_and_writes_the_png(tmp_path, random_weights):
    result = subprocess.run(
        [sys.executable, "-m", "scannernet_ros.tools.cli", "demo", "--model", str(random_weights), "--width", "96",
         "--length", "150", "--line-rate", "0", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "lines in 150, out 150, received downstream 150" in result.stdout
    assert "against ground truth: IoU" in result.stdout and "end-to-end latency" in result.stdout
    png = Image.open(tmp_path / "demo.png")
    assert png.size == (3 * 96 + 2 * 4, 150)  # input | ground truth | mask
