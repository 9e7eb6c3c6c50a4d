"""`make bench` runs: a smoke run with few repetitions (timings are printed, never asserted)."""
import importlib.util
import json
import subprocess
import sys

import pytest

# The memory table is torchinfo's estimate (the paper's Table 2): a bench extra, not a runtime need.
# A skip mark, not a module-level importorskip: launch_testing's pytest plugin (in every ROS install)
# imports each test module while collecting, and a Skipped raised there skips the whole folder.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("torchinfo") is None,
                                reason="torchinfo is not installed (pip install -r requirements-test.txt)")


def run_bench(out, parts: str, *args: str) -> tuple[dict, str]:
    """``scannernet bench`` in a subprocess, as ``make bench`` runs it; the JSON report and stdout."""
    result = subprocess.run([sys.executable, "-m", "scannernet_ros.tools.cli", "bench", "--parts", parts, *args,
                             "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    name = "bench_" + "_".join(sorted(parts.split(","))) + ".json"
    return json.loads((out / name).read_text()), result.stdout


def test_bench_writes_its_tables(tmp_path):
    report, stdout = run_bench(tmp_path, "memory,latency,swath", "--runs", "12", "--swath-lines", "3")
    assert {m["model"] for m in report["memory"]} == {"scannernet", "scannernet_small", "baseline1d", "cfcn", "cunetpp"}
    assert {m["paper_mb"] for m in report["memory"]} == {0.08, 28.62, 47.19, 0.10, 0.15}
    assert all(r["mean"] > 0 for r in report["latency"])
    steppers = [(r["model"], r["stepper"]) for r in report["swath"]]
    assert ("scannernet", "CpuStepper") in steppers and ("scannernet", "GEMM floor") in steppers
    assert all(r["lines_per_s"] > 0 for r in report["swath"])
    assert "C-FCN whole image / first mask line" in stdout


def test_bench_ros_part_runs_both_widths_and_both_rss_rates(tmp_path):
    """The ROS 2 part across processes, shortened: every line arrives over reliable QoS in each run."""
    report, stdout = run_bench(tmp_path, "ros", "--ros-lines", "120", "--long-lines", "1200")
    runs = {(r["topic"], r["width"], r["rate_hz"]): r for r in report["end_to_end"]}
    assert set(runs) == {("mask_line", 384, 225.0), ("mask_line", 384, 0.0), ("mask_line", 6916, 225.0),
                         ("mask_line", 6916, 0.0), ("scanline", 384, 225.0), ("scanline", 6916, 225.0),
                         ("udp", 384, 225.0), ("udp", 6916, 225.0)}
    for (topic, _, _), r in runs.items():
        if topic == "udp":  # the platform's floor: plain datagrams, which may be lost
            assert r["received"] > 0 and r["latency_ms"]["p50"] > 0
        else:
            assert (r["received"], r["lost"], r["disorder"]) == (120, 0, 0)
    assert runs[("mask_line", 384, 225.0)]["latency_ms"]["p50"] > 0
    seen = runs[("mask_line", 384, 225.0)]["segmenter"]  # the segmenter's own diagnostics reached the bench
    assert seen["reports"] >= 1 and seen["compute_p50_ms"] > 0 and seen["receive_p50_ms"] > 0
    assert runs[("scanline", 384, 225.0)]["latency_ms"]["p50"] > 0
    assert runs[("mask_line", 384, 0.0)]["latency_ms"]["p50"] is None  # stamps are not times when unpaced
    assert [(r["rate_hz"], r["received"]) for r in report["rss"]] == [(225.0, 1200), (0.0, 1200)]
    assert all(r["rss_end_mb"] > 20 for r in report["rss"])  # a real process's RSS (python, numpy, rclpy at least)
    assert "One hop, no model" in stdout and "loopback UDP" in stdout and "Segmenter memory over scene length" in stdout


def test_bench_step_table_has_the_floor_and_every_cpu_step(tmp_path):
    report, stdout = run_bench(tmp_path, "step", "--runs", "15")
    cases = [r["case"] for r in report["step"]]
    assert cases[0].startswith("GEMM floor") and report["step"][0]["ratio_to_floor"] == 1.0
    for wanted in ("compiled kernel (this package's default), back to back", "numpy step (BLAS), back to back",
                   "LineSegmenter.process, one line per 4.4 ms (paced)"):
        assert wanted in cases, cases
    assert all(r["p50"] > 0 for r in report["step"])
