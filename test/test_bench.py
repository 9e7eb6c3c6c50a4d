"""`make bench` runs: a smoke run with few repetitions (timings are printed, never asserted)."""
import json
import subprocess
import sys


def test_bench_writes_its_tables(tmp_path):
    result = subprocess.run([sys.executable, "-m", "scannernet_ros.cli", "bench", "--parts", "memory,latency,swath",
                             "--runs", "12", "--swath-lines", "3", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "bench_latency_memory_swath.json").read_text())
    assert {m["model"] for m in report["memory"]} == {"scannernet", "scannernet_small", "baseline1d", "cfcn", "cunetpp"}
    assert {m["paper_mb"] for m in report["memory"]} == {0.08, 28.62, 47.19, 0.10, 0.15}
    assert all(r["mean"] > 0 for r in report["latency"]) and len(report["swath"]) == 2
    assert "C-FCN whole image / first mask line" in result.stdout
