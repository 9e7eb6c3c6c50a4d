"""The compiled line step built for each x86 level the package ships a code path for (AVX2 with its
own register blocking and reciprocal, SSE2, AVX-512) and run on this machine, on the same inputs as
the numpy step: a build for a CPU other than this one is otherwise never run here, since the package
builds with -march=native.  A level this CPU cannot run is skipped with the reason."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from linestep_harness_io import HARNESS, check_build, gain_offset, random_samples, random_tensors, run_harness

CC = shutil.which("gcc") or shutil.which("cc")
FLAGS = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").is_file() else set()
X86 = "sse2" in FLAGS
LEVELS = {   # name: (compiler flags, CPU flags the build needs)
    "sse2": (("-march=x86-64",), {"sse2"}),
    "avx2": (("-march=x86-64-v3", "-mno-avx512f"), {"avx2", "fma"}),
    "avx512": (("-march=x86-64-v4",), {"avx512f", "avx512bw", "avx512dq", "avx512vl"}),
}
CASES = [("scannernet", np.dtype(np.uint16), w, 4, 1) for w in (1, 33, 384, 6916)]
CASES += [("scannernet_small", np.dtype(np.uint8), 70, 4, 1), ("scannernet", np.dtype(np.float32), 6916, 2, 3)]


def _why_not(level: str) -> str | None:
    if CC is None or not X86:
        return "needs an x86-64 machine with a C compiler"
    missing = LEVELS[level][1] - FLAGS
    return f"this CPU lacks {', '.join(sorted(missing))}" if missing else None


@pytest.fixture(scope="module", params=sorted(LEVELS))
def level_harness(request, tmp_path_factory) -> Path:
    reason = _why_not(request.param)
    if reason:
        pytest.skip(reason)
    exe = tmp_path_factory.mktemp(request.param) / "linestep_harness"
    build = subprocess.run([CC, "-O3", *LEVELS[request.param][0], "-pthread", "-Wall", "-Werror", "-o", str(exe),
                            str(HARNESS), "-lm"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return exe


@pytest.mark.parametrize("name,dtype,width,lines,threads", CASES,
                         ids=[f"{c[0]}-{c[1].name}-w{c[2]}-t{c[4]}" for c in CASES])
def test_x86_level_kernel_equals_the_numpy_step(level_harness, tmp_path, name, dtype, width, lines, threads):
    check_build(level_harness, (), tmp_path, name, dtype, width, lines, threads)


def test_x86_level_kernel_flags_a_non_finite_line(level_harness, tmp_path):
    samples = random_samples(np.dtype(np.float32), 2, 40, seed=2)
    samples[1, 0, 17] = np.nan
    _, finite = run_harness(level_harness, random_tensors("scannernet", seed=1), samples,
                            *gain_offset(np.dtype(np.float32)), 1, tmp_path)
    assert finite.tolist() == [True, False]
