"""Predicted speed of the compiled line step on CPUs this machine does not have (llvm-mca).

The kernel is compiled to assembly for each target with markers around its three hot regions
(``_linestep.c``: ``tile``, one channel and tap group of the Winograd input transform of a block;
``terms``, one input row and tap group of a gate-sum pass; ``lstm``, one hidden channel's LSTM
update of one vector of pixel quads).  llvm-mca's scheduling model of the core gives cycles per
iteration of each region; the kernel's loop counts turn them into cycles per line:

    per block and layer:  tile x channels x groups
                          + hidden x ((4 / RP) x (6 / JP) x channels x groups x terms + NB x lstm)

with the register blocking RP x JP x NB and the block of 4 x lanes x NB pixels the build uses
(Winograd F(4, 3): six terms per group of three taps and four pixels).

and the core's clock into lines per second.  A static model: no cache misses, no branch
mispredictions, no loop overhead outside the regions, one core.  The same method on this machine's
own CPU, set beside the kernel's measured rate here, shows how far it is off.  These are
predictions, not measurements on the board.
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..stepper import WINOGRAD_G, KernelStepper, _linestep

SOURCE = Path(__file__).resolve().parent.parent / "_linestep.c"
LINE_RATE_HZ = 225.0          # Landsat 8 OLI lines per second
FULL_SWATH = 6916


@dataclass(frozen=True)
class Target:
    name: str
    compiler: str
    cflags: tuple[str, ...]
    mca: tuple[str, ...]
    lanes: int                       # floats per vector register (VL in _linestep.c)
    blocking: tuple[int, int, int]   # RP, JP, NB in _linestep.c
    ghz: float
    board: str


# RP, JP, NB of _linestep.c: AVX-512 and NEON (32 vector registers), and AVX2 (16); its Winograd
# F(4, 3) has as many terms per tap group as WINOGRAD_G has rows, and four output pixels per lane
WIDE_BLOCKING, AVX2_BLOCKING = (4, 3, 1), (4, 1, 3)
TERMS, PIXELS_PER_LANE = len(WINOGRAD_G), 4

ARM = (
    Target("cortex-a57", "aarch64-linux-gnu-gcc", ("-mcpu=cortex-a57",), ("-mtriple=aarch64", "-mcpu=cortex-a57"),
           4, WIDE_BLOCKING, 1.43, "Jetson Nano (4x Cortex-A57 at 1.43 GHz)"),
    Target("cortex-a72", "aarch64-linux-gnu-gcc", ("-mcpu=cortex-a72",), ("-mtriple=aarch64", "-mcpu=cortex-a72"),
           4, WIDE_BLOCKING, 1.5, "Raspberry Pi 4 class (Cortex-A72 at 1.5 GHz)"),
    Target("cortex-a78", "aarch64-linux-gnu-gcc", ("-mcpu=cortex-a78",), ("-mtriple=aarch64", "-mcpu=cortex-a78"),
           4, WIDE_BLOCKING, 2.2, "Jetson Orin class (Cortex-A78AE at 2.2 GHz)"),
    Target("neoverse-n1", "aarch64-linux-gnu-gcc", ("-mcpu=cortex-a78",), ("-mtriple=aarch64", "-mcpu=neoverse-n1"),
           4, WIDE_BLOCKING, 2.2, "Orin class again, scheduled with LLVM's Neoverse-N1 model (an A76-derived core)"),
)

# The AVX2 build (what -march=native gives on a CPU without AVX-512) on cores that have no more:
# the owner's kind of machine and many users'.  Clocks are typical all-core figures.
AVX2_FLAGS = ("-march=x86-64-v3", "-mno-avx512f")
X86_AVX2 = (
    Target("znver2", "gcc", AVX2_FLAGS, ("-mcpu=znver2",), 8, AVX2_BLOCKING, 3.0,
           "AMD EPYC Rome class (Zen 2), AVX2 build"),
    Target("znver3", "gcc", AVX2_FLAGS, ("-mcpu=znver3",), 8, AVX2_BLOCKING, 3.0,
           "AMD EPYC Milan class (Zen 3), AVX2 build"),
    Target("haswell", "gcc", AVX2_FLAGS, ("-mcpu=haswell",), 8, AVX2_BLOCKING, 2.5, "Intel Haswell, AVX2 build"),
    Target("skylake", "gcc", AVX2_FLAGS, ("-mcpu=skylake",), 8, AVX2_BLOCKING, 3.0, "Intel Skylake client, AVX2 build"),
)

REGION = re.compile(r"\[\d+\] Code Region - (\w+).*?Iterations:\s+(\d+).*?Total Cycles:\s+(\d+)", re.S)
# A row of llvm-mca's instruction info whose latency is 100: LLVM's placeholder for "not measured"
# (or microcoded), far from what the core takes; the mnemonic follows the flag columns.
PLACEHOLDER = re.compile(r"^\s*\d+\s+100\s+[\d.]+\s+(?:[*U]\s+)*([a-z][\w.]*)", re.M)


def mca_path() -> str | None:
    """The llvm-mca to run: LLVM 19's where it is installed beside an older default."""
    return shutil.which("llvm-mca-19") or shutil.which("llvm-mca")


def region_cycles(target: Target, iterations: int = 200, placeholders: set[str] | None = None) -> dict[str, float]:
    """Cycles per iteration of each marked region, from llvm-mca's model of ``target``; adds to
    ``placeholders`` the instructions in them that the model gives its placeholder latency."""
    mca = mca_path()
    if shutil.which(target.compiler) is None or mca is None:
        raise FileNotFoundError(f"needs {target.compiler} and llvm-mca (apt-get install gcc-aarch64-linux-gnu llvm-19)")
    with tempfile.TemporaryDirectory() as tmp:
        asm = Path(tmp) / f"{target.name}.s"
        subprocess.run([target.compiler, "-O3", *target.cflags, "-DLINESTEP_CORE_ONLY", "-DLINESTEP_MCA", "-S",
                        "-o", str(asm), str(SOURCE)], check=True, capture_output=True, text=True)
        run = subprocess.run([mca, *target.mca, f"-iterations={iterations}", str(asm)],
                             capture_output=True, text=True)
        if run.returncode != 0:   # an older LLVM may lack or crash on a core's model (LLVM 14 on cortex-a78)
            why = (run.stderr.strip().splitlines() or [f"exit status {run.returncode}"])[0][:160]
            raise RuntimeError(f"{mca_version()} failed on {' '.join(target.mca)}: {why}")
        report = run.stdout
    if placeholders is not None:
        placeholders.update(PLACEHOLDER.findall(report))
    cycles = {name: int(total) / int(its) for name, its, total in REGION.findall(report)}
    missing = {"tile", "terms", "lstm"} - set(cycles)
    if missing:
        raise RuntimeError(f"llvm-mca found no region {sorted(missing)} in the {target.name} build")
    return cycles


def cycles_per_line(cycles: dict[str, float], target: Target, width: int,
                    bands: int = 3, f1: int = 4, f2: int = 8, k: int = 9) -> float:
    """The kernel's loop counts times each region's cycles (ScannerNet's sizes by default)."""
    rows, terms_per_pass, vectors = target.blocking
    passes = (4 // rows) * (TERMS // terms_per_pass)
    groups = (k - 1) // 3 + 1
    blocks = math.ceil(width / (PIXELS_PER_LANE * target.lanes * vectors))
    total = 0.0
    for channels, hidden in ((bands + f1, f1), (f1 + f2, f2)):
        terms = channels * groups
        total += cycles["tile"] * terms + hidden * (passes * terms * cycles["terms"] + vectors * cycles["lstm"])
    return blocks * total


def host_target() -> Target:
    """This machine's CPU, for setting the model beside a measurement: LLVM's model of the core it
    detects (``-mcpu=native``), the build ``-march=native`` gives, the clock /proc/cpuinfo gives."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    mhz = re.search(r"cpu MHz\s*:\s*([\d.]+)", info)
    model = re.search(r"model name\s*:\s*(.+)", info)
    avx512 = " avx512f" in info
    return Target("this x86 CPU", "gcc", ("-march=native",), ("-mcpu=native",),
                  16 if avx512 else 8, WIDE_BLOCKING if avx512 else AVX2_BLOCKING, float(mhz[1]) / 1e3 if mhz else 2.5,
                  f"this machine, {model[1].strip() if model else 'x86'}, " + ("AVX-512" if avx512 else "AVX2"))


def mca_version() -> str:
    """The llvm-mca that region_cycles runs, as its --version names it."""
    mca = mca_path()
    if mca is None:
        return "no llvm-mca"
    out = subprocess.run([mca, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"LLVM version ([\d.]+)", out)
    return f"llvm-mca {found[1] if found else '(unknown version)'}"


def measured_lines_per_s(width: int = FULL_SWATH, seconds: float = 2.0) -> float:
    """The compiled step's rate here at ``width`` on one thread (best of short runs)."""
    if _linestep is None:
        raise RuntimeError("the compiled kernel is not built here")
    rng = np.random.default_rng(0)
    tensors = {"cell1.gates.weight": rng.normal(0, .3, (16, 7, 9)), "cell1.gates.bias": rng.normal(0, .3, 16),
               "cell2.gates.weight": rng.normal(0, .3, (32, 12, 9)), "cell2.gates.bias": rng.normal(0, .3, 32),
               "head.weight": rng.normal(0, .3, (1, 8, 1)), "head.bias": rng.normal(0, .3, 1)}
    step = KernelStepper({n: v.astype(np.float32) for n, v in tensors.items()}, width)
    line = rng.integers(5000, 40000, (3, width), dtype=np.uint16)
    gain, offset = np.full(3, 2e-5 / 0.1, np.float32), np.full(3, -1.0, np.float32)
    best, stop = math.inf, time.perf_counter() + seconds
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        for _ in range(10):
            step.step_samples(line, gain, offset)
        best = min(best, (time.perf_counter() - t0) / 10)
    return 1.0 / best


def table(widths=(384, FULL_SWATH)) -> tuple[list[dict], str]:
    rows, failed, guessed = [], [], {}
    for target in (*ARM, *X86_AVX2, host_target()):
        placeholders: set[str] = set()
        try:
            cycles = region_cycles(target, placeholders=placeholders)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            failed.append(f"{target.name}: {exc}")
            continue
        if placeholders:
            guessed[target.name] = sorted(placeholders)
        for width in widths:
            per_line = cycles_per_line(cycles, target, width)
            rate = target.ghz * 1e9 / per_line
            rows.append({"target": target.name, "board": target.board, "ghz": target.ghz, "width": width,
                         "cycles_per_pixel": per_line / width, "ms_per_line": 1e3 / rate, "lines_per_s": rate,
                         "real_time_factor": rate / LINE_RATE_HZ, "regions": cycles})
    if not rows:
        raise RuntimeError("llvm-mca modelled no target: " + "; ".join(failed))
    a57 = next((r["regions"] for r in rows if r["target"] == "cortex-a57"), None)
    borrowed = sorted({r["target"] for r in rows if r["target"] != "cortex-a57" and r["regions"] == a57})
    lines = [f"Predicted by {mca_version()} (static model, one core; predicted, not measured on the board), ScannerNet:", "",
             "| target | clock GHz | width px | cycles / px | ms / line | lines / s | x real time (225 lines/s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['target']} ({r['board']}) | {r['ghz']:.2f} | {r['width']:,} | {r['cycles_per_pixel']:.0f} | "
                     f"{r['ms_per_line']:.3f} | {r['lines_per_s']:,.0f} | {r['real_time_factor']:.2f} |")
    if borrowed:
        lines += ["", f"llvm-mca gives {', '.join(borrowed)} the same cycles as cortex-a57: LLVM has no scheduling model "
                  "of its own for them and uses the A57's, so only their clocks differ here."]
    if guessed:
        lines += ["", "Pessimistic where the model has no figure: " + "; ".join(
            f"{name} gives {', '.join(ops)} LLVM's placeholder latency of 100 cycles" for name, ops in guessed.items())
            + " (a few cycles on the cores themselves), so those rows are slower than the core would be."]
    if failed:
        lines += ["", "Not modelled (use LLVM 19: apt-get install llvm-19): " + "; ".join(failed) + "."]
    host = rows[-1] if rows[-1]["target"] == "this x86 CPU" else None
    if host is None:
        return rows, "\n".join(lines + ["", "No measured / predicted ratio: this machine's core was not modelled."])
    measured = measured_lines_per_s(FULL_SWATH)
    lines += ["", f"The same method on this machine's CPU predicts {host['lines_per_s']:,.0f} lines/s at "
              f"{FULL_SWATH:,} px ({host['ghz']:.2f} GHz from /proc/cpuinfo); the kernel measured here does "
              f"{measured:,.0f} lines/s: measured / predicted = {measured / host['lines_per_s']:.2f}."]
    return rows + [{"target": "measured here", "width": FULL_SWATH, "lines_per_s": measured,
                    "measured_over_predicted": measured / host["lines_per_s"]}], "\n".join(lines)
