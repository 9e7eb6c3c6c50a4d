"""Inputs, expected outputs and the file protocol of test/linestep_harness.c: the compiled line
step built for another instruction set (aarch64 under qemu, or another x86 level) and run on the
same lines as the host's kernel and the numpy step."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from scannernet_ros.stepper import CpuStepper, KernelStepper, _linestep, _pack_gates

HARNESS = Path(__file__).with_name("linestep_harness.c")
SIZES = {"scannernet": (4, 8, 9), "scannernet_small": (4, 4, 7)}
KINDS = {np.dtype(np.uint8): "B", np.dtype(np.uint16): "H", np.dtype(np.float32): "f"}


def random_tensors(name: str, seed: int) -> dict[str, np.ndarray]:
    f1, f2, k = SIZES[name]
    rng = np.random.default_rng(seed)
    shapes = {"cell1.gates.weight": (4 * f1, 3 + f1, k), "cell1.gates.bias": (4 * f1,),
              "cell2.gates.weight": (4 * f2, f1 + f2, k), "cell2.gates.bias": (4 * f2,),
              "head.weight": (1, f2, 1), "head.bias": (1,)}
    return {n: rng.normal(0, 0.4, s).astype(np.float32) for n, s in shapes.items()}


def random_samples(dtype: np.dtype, lines: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return rng.integers(0, 256, (lines, 3, width), dtype=np.uint8)
    if dtype == np.uint16:
        return rng.integers(5000, 60000, (lines, 3, width), dtype=np.uint16)
    return rng.uniform(-0.1, 1.2, (lines, 3, width)).astype(np.float32)


def gain_offset(dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    scale = {np.dtype(np.uint8): 1 / 255, np.dtype(np.uint16): 2e-5}.get(dtype, 1.0)
    gain = np.array([scale / 0.1, scale / 0.12, scale / 0.11], np.float32)
    return gain, np.array([-2.0, -1.5, -1.8], np.float32)


def run_harness(exe: Path, tensors: dict, samples: np.ndarray, gain, offset, threads: int, tmp: Path,
                runner: tuple[str, ...] = ()):
    """Every line of ``samples`` through a build of the harness (under ``runner``, e.g. qemu) ->
    (probabilities per line, finite flags)."""
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
    run = subprocess.run([*runner, str(exe), str(src), str(dst)], capture_output=True, text=True, timeout=300)
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


def check_build(exe: Path, runner: tuple[str, ...], tmp: Path, name: str, dtype: np.dtype, width: int, lines: int,
                threads: int) -> None:
    """A build of the harness agrees with the numpy step (and the host's kernel) to 1e-5 and gives
    the same masks, on random weights and lines of one case."""
    tensors = random_tensors(name, seed=width)
    samples = random_samples(dtype, lines, width, seed=width + lines)
    gain, offset = gain_offset(dtype)
    out, finite = run_harness(exe, tensors, samples, gain, offset, threads, tmp, runner)
    reference, host = run_on_host(tensors, samples, gain, offset)
    assert finite.all()
    np.testing.assert_allclose(out, reference, atol=1e-5, rtol=0)
    assert np.array_equal(out >= 0.5, reference >= 0.5) or np.abs(reference - 0.5).min() < 1e-5
    if host is not None:
        np.testing.assert_allclose(out, host, atol=1e-5, rtol=0)
