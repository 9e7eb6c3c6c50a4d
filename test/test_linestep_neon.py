"""The compiled line step built for aarch64 (NEON, as on a Jetson Nano) and run under qemu-user,
on the same inputs as the host's kernel and the numpy step: ScannerNet and ScannerNet Small,
widths 1 to 6,916, the thread split, every sample type the kernel takes.

Needs Debian's gcc-aarch64-linux-gnu and qemu-user (CI installs them and sets
SCANNERNET_REQUIRE_NEON=1, so there it fails instead of skipping).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from linestep_harness_io import CASES, HARNESS, check_build, gain_offset, random_samples, random_tensors, run_harness
from scannernet_ros.tools.predict import mca_path

CC, QEMU = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
MISSING = None if CC and QEMU else "needs gcc-aarch64-linux-gnu and qemu-user (apt-get install qemu-user gcc-aarch64-linux-gnu)"
if MISSING and os.environ.get("SCANNERNET_REQUIRE_NEON") == "1":
    raise RuntimeError(f"SCANNERNET_REQUIRE_NEON=1 but the aarch64 test cannot run: {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


@pytest.fixture(scope="module")
def neon_harness(tmp_path_factory) -> Path:
    """The harness cross-compiled for the Nano's core, statically (no aarch64 sysroot needed at run time)."""
    exe = tmp_path_factory.mktemp("neon") / "linestep_harness"
    build = subprocess.run([CC, "-O3", "-mcpu=cortex-a57", "-static", "-pthread", "-Wall", "-Werror",
                            "-o", str(exe), str(HARNESS), "-lm"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return exe


@pytest.mark.parametrize("name,dtype,width,lines,threads", CASES,
                         ids=[f"{c[0]}-{c[1].name}-w{c[2]}-t{c[4]}" for c in CASES])
def test_aarch64_neon_kernel_equals_the_numpy_step_and_the_host_kernel(neon_harness, tmp_path, name, dtype,
                                                                        width, lines, threads):
    check_build(neon_harness, (QEMU,), tmp_path, name, dtype, width, lines, threads)


def test_aarch64_neon_kernel_flags_a_non_finite_line(neon_harness, tmp_path):
    tensors = random_tensors("scannernet", seed=1)
    samples = random_samples(np.dtype(np.float32), 2, 40, seed=2)
    samples[1, 0, 17] = np.nan
    _, finite = run_harness(neon_harness, tensors, samples, *gain_offset(np.dtype(np.float32)), 1, tmp_path, (QEMU,))
    assert finite.tolist() == [True, False]


def test_predicted_cycles_follow_the_kernels_loop_counts():
    """The arithmetic of the llvm-mca prediction on made-up region cycles (the tools are not needed)."""
    from scannernet_ros.tools.predict import ARM, cycles_per_line
    a57 = ARM[0]
    one = cycles_per_line({"tile": 1.0, "terms": 0.0, "lstm": 0.0}, a57, 16)  # one block of 16 px
    assert one == (3 + 4) * 3 + (4 + 8) * 3                               # channels x tap groups, both layers
    terms = cycles_per_line({"tile": 0.0, "terms": 1.0, "lstm": 0.0}, a57, 16)
    assert terms == 2 * (4 * (7 * 3) + 8 * (12 * 3))                     # hidden x terms, 6 / JP 3 = 2 passes
    assert cycles_per_line({"tile": 0.0, "terms": 0.0, "lstm": 1.0}, a57, 6916) == 433 * (4 + 8)


@pytest.mark.skipif(mca_path() is None, reason="needs llvm-mca (apt-get install llvm-19)")
def test_llvm_mca_finds_the_three_hot_regions_in_the_aarch64_build():
    from scannernet_ros.tools.predict import ARM, region_cycles
    cycles = region_cycles(ARM[0], iterations=20)
    assert set(cycles) == {"tile", "terms", "lstm"} and all(c > 0 for c in cycles.values())


def test_a_core_llvm_mca_cannot_model_is_named_and_the_others_still_predicted(monkeypatch):
    """LLVM 14's llvm-mca aborts on cortex-a78: the table says so and goes on, no traceback."""
    from scannernet_ros.tools import predict

    def cycles(target, iterations=200, placeholders=None):
        if target.name == "cortex-a78":
            raise RuntimeError("llvm-mca 14.0.6 failed on -mtriple=aarch64 -mcpu=cortex-a78: abort")
        return {"tile": 10.0, "terms": 5.0, "lstm": 40.0}
    monkeypatch.setattr(predict, "region_cycles", cycles)
    monkeypatch.setattr(predict, "measured_lines_per_s", lambda width: 1000.0)
    rows, text = predict.table()
    assert "cortex-a78" not in {r["target"] for r in rows} and "cortex-a57" in {r["target"] for r in rows}
    assert "Not modelled" in text and "cortex-a78: llvm-mca 14.0.6 failed" in text
    assert rows[-1]["target"] == "measured here"


def test_instructions_llvm_mca_gives_its_placeholder_latency_are_named():
    """LLVM's Zen 2 model gives vperm2f128 a latency of 100 (its 'not measured'): the table says so."""
    from scannernet_ros.tools.predict import PLACEHOLDER
    report = ("[1]    [2]    [3]    [4]    [5]    [6]    Instructions:\n"
              " 1      8     0.33    *                   vmovups\t(%rax), %ymm7\n"
              " 1      100   0.25    *                   vperm2f128\t$49, 64(%rax), %ymm7, %ymm8\n"
              " 1      100   0.25                        vperm2f128\t$33, %ymm1, %ymm2, %ymm1\n"
              " 2      10    1.00                        vdivps\t%ymm1, %ymm2, %ymm3\n")
    assert set(PLACEHOLDER.findall(report)) == {"vperm2f128"}
