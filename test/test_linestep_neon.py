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

from scannernet_ros.stepper import CpuStepper, KernelStepper, _linestep, _pack_gates

HARNESS = Path(__file__).with_name("linestep_harness.c")
CC, QEMU = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
MISSING = None if CC and QEMU else "needs gcc-aarch64-linux-gnu and qemu-user (apt-get install qemu-user gcc-aarch64-linux-gnu)"
if MISSING and os.environ.get("SCANNERNET_REQUIRE_NEON") == "1":
    raise RuntimeError(f"SCANNERNET_REQUIRE_NEON=1 but the aarch64 test cannot run: {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

SIZES = {"scannernet": (4, 8, 9), "scannernet_small": (4, 4, 7)}
KINDS = {np.dtype(np.uint8): "B", np.dtype(np.uint16): "H", np.dtype(np.float32): "f"}


@pytest.fixture(scope="module")
def neon_harness(tmp_path_factory) -> Path:
    """The harness cross-compiled for the Nano's core, statically (no aarch64 sysroot needed at run time)."""
    exe = tmp_path_factory.mktemp("neon") / "linestep_harness"
    build = subprocess.run([CC, "-O3", "-mcpu=cortex-a57", "-static", "-pthread", "-Wall", "-Werror",
                            "-o", str(exe), str(HARNESS), "-lm"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return exe


def _tensors(name: str, seed: int) -> dict[str, np.ndarray]:
    f1, f2, k = SIZES[name]
    rng = np.random.default_rng(seed)
    shapes = {"cell1.gates.weight": (4 * f1, 3 + f1, k), "cell1.gates.bias": (4 * f1,),
              "cell2.gates.weight": (4 * f2, f1 + f2, k), "cell2.gates.bias": (4 * f2,),
              "head.weight": (1, f2, 1), "head.bias": (1,)}
    return {n: rng.normal(0, 0.4, s).astype(np.float32) for n, s in shapes.items()}


def _samples(dtype: np.dtype, lines: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return rng.integers(0, 256, (lines, 3, width), dtype=np.uint8)
    if dtype == np.uint16:
        return rng.integers(5000, 60000, (lines, 3, width), dtype=np.uint16)
    return rng.uniform(-0.1, 1.2, (lines, 3, width)).astype(np.float32)


def _gain_offset(dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    scale = {np.dtype(np.uint8): 1 / 255, np.dtype(np.uint16): 2e-5}.get(dtype, 1.0)
    gain = np.array([scale / 0.1, scale / 0.12, scale / 0.11], np.float32)
    return gain, np.array([-2.0, -1.5, -1.8], np.float32)


def run_on_neon(exe: Path, tensors: dict, samples: np.ndarray, gain, offset, threads: int, tmp: Path):
    """Every line of ``samples`` through the aarch64 build -> (probabilities per line, finite flags)."""
    lines, bands, width = samples.shape
    f1, f2, k = tensors["cell1.gates.weight"].shape[0] // 4, tensors["cell2.gates.weight"].shape[0] // 4, \
        tensors["cell1.gates.weight"].shape[2]
    w1, b1 = _pack_gates(tensors["cell1.gates.weight"], tensors["cell1.gates.bias"])
    w2, b2 = _pack_gates(tensors["cell2.gates.weight"], tensors["cell2.gates.bias"])
    head = np.append(tensors["head.weight"].reshape(-1), tensors["head.bias"]).astype(np.float32)
    header = np.array([bands, f1, f2, k, width, lines, threads, ord(KINDS[samples.dtype]), 1], np.int32)
    src, dst = tmp / "in.bin", tmp / "out.bin"
    src.write_bytes(b"".join(np.ascontiguousarray(a).tobytes() for a in
                             (header, gain, offset, w1, b1, w2, b2, head, samples)))
    run = subprocess.run([QEMU, str(exe), str(src), str(dst)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    raw = dst.read_bytes()
    out = np.frombuffer(raw[:lines * width * 4], np.float32).reshape(lines, width)
    return out, np.frombuffer(raw[lines * width * 4:], np.int32).astype(bool)


def run_on_host(tensors: dict, samples: np.ndarray, gain, offset) -> tuple[np.ndarray, np.ndarray]:
    """The same lines through the numpy step and (where built) the host's kernel."""
    width = samples.shape[-1]
    ref = CpuStepper(tensors, width)
    numpy_out = np.stack([ref.probabilities(gain[:, None] * s.astype(np.float32) + offset[:, None]) for s in samples])
    if _linestep is None:
        return numpy_out, None
    kernel = KernelStepper(tensors, width)
    return numpy_out, np.stack([kernel.step_samples(s, gain, offset)[0] for s in samples])


CASES = [(name, dtype, width, lines, threads)
         for name, widths in (("scannernet", (1, 7, 33, 70, 384, 6916)), ("scannernet_small", (1, 70, 384, 2048)))
         for width in widths
         for dtype, threads in ((np.dtype(np.uint16), 1), (np.dtype(np.uint8), 1), (np.dtype(np.float32), 1))
         for lines in ((3 if width >= 2048 else 8),)]
CASES += [("scannernet", np.dtype(np.uint16), 6916, 3, 4), ("scannernet_small", np.dtype(np.float32), 2048, 3, 3)]


@pytest.mark.parametrize("name,dtype,width,lines,threads", CASES,
                         ids=[f"{c[0]}-{c[1].name}-w{c[2]}-t{c[4]}" for c in CASES])
def test_aarch64_neon_kernel_equals_the_numpy_step_and_the_host_kernel(neon_harness, tmp_path, name, dtype,
                                                                        width, lines, threads):
    tensors = _tensors(name, seed=width)
    samples = _samples(dtype, lines, width, seed=width + lines)
    gain, offset = _gain_offset(dtype)
    neon, finite = run_on_neon(neon_harness, tensors, samples, gain, offset, threads, tmp_path)
    reference, host = run_on_host(tensors, samples, gain, offset)
    assert finite.all()
    np.testing.assert_allclose(neon, reference, atol=1e-5, rtol=0)
    assert np.array_equal(neon >= 0.5, reference >= 0.5) or np.abs(reference - 0.5).min() < 1e-5
    if host is not None:
        np.testing.assert_allclose(neon, host, atol=1e-5, rtol=0)


def test_aarch64_neon_kernel_flags_a_non_finite_line(neon_harness, tmp_path):
    tensors = _tensors("scannernet", seed=1)
    samples = _samples(np.dtype(np.float32), 2, 40, seed=2)
    samples[1, 0, 17] = np.nan
    _, finite = run_on_neon(neon_harness, tensors, samples, *_gain_offset(np.dtype(np.float32)), 1, tmp_path)
    assert finite.tolist() == [True, False]


def test_predicted_cycles_follow_the_kernels_loop_counts():
    """The arithmetic of the llvm-mca prediction on made-up region cycles (the tools are not needed)."""
    from scannernet_ros.tools.predict import ARM, cycles_per_line
    a57 = ARM[0]
    one = cycles_per_line({"tile": 1.0, "terms": 0.0, "lstm": 0.0}, a57, 8)   # one block of 8 px
    assert one == (3 + 4) * 3 + (4 + 8) * 3                               # channels x tap groups, both layers
    terms = cycles_per_line({"tile": 0.0, "terms": 1.0, "lstm": 0.0}, a57, 8)
    assert terms == 4 * (7 * 3) + 8 * (12 * 3)                           # hidden x terms (RP 4: one pass)
    assert cycles_per_line({"tile": 0.0, "terms": 0.0, "lstm": 1.0}, a57, 6916) == 865 * (4 + 8)


@pytest.mark.skipif(shutil.which("llvm-mca-19") is None and shutil.which("llvm-mca") is None,
                    reason="needs llvm-mca (apt-get install llvm-19)")
def test_llvm_mca_finds_the_three_hot_regions_in_the_aarch64_build():
    from scannernet_ros.tools.predict import ARM, region_cycles
    cycles = region_cycles(ARM[0], iterations=20)
    assert set(cycles) == {"tile", "terms", "lstm"} and all(c > 0 for c in cycles.values())
