"""Per-line inference on the CPU in numpy: no torch, no per-line allocation.

One stepper per streaming architecture, built from the weights file's tensors (numpy arrays),
each equal to the torch model's ``step`` to 1e-6 (tested where torch is present):

- :class:`KernelStepper` (ScannerNet, the default where the package's C extension ``_linestep`` was
  built): the whole step in one compiled call, each convolution in Winograd's F(4, 3) form (half
  the multiply-adds) with the gate sums kept in vector registers until the LSTM update has used
  them (no im2col copy, no gate arrays).
- :class:`CpuStepper` (ScannerNet, numpy only: the fallback, and the reference the kernel is
  tested against): each gate convolution is one BLAS matrix product over an im2col view of a
  zero-padded buffer that holds ``[x; h1; h2]``, so ``h1`` is written once and read by both layers.
- :class:`BaselineStepper` (the 1D baseline): two convolutions and a 1x1 head, no state.
- :class:`ThresholdStepper` (the brightness reference): the mean of R, G, B reflectance against t.

Both ScannerNet steps take sigmoids as ``(1 + tanh(z / 2)) / 2`` with the halving folded into the
weights, so each layer needs one ``tanh`` over all four gates.

CUDA and the model's own ``step`` (what these are checked against) are in :mod:`.learning.torch_stepper`.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

try:  # the compiled step; without a C compiler at install time the numpy step is used
    from . import _linestep
    KERNEL_MISSING = ""
except ImportError as _exc:  # pragma: no cover - depends on the build
    _linestep = None
    KERNEL_MISSING = (f"compiled kernel not built ({_exc}; no C compiler or Python headers at install?)"
                      .replace("\n", " "))

STEPPERS = ("auto", "numpy", "torch", "plain")
_kernel_threads = 1  # threads the compiled step may split a wide line over (set_kernel_threads)
KERNEL_SAMPLES = tuple(np.dtype(t) for t in (np.uint8, np.uint16, np.float32))  # native byte order only


def set_kernel_threads(n: int) -> None:
    """Threads the compiled step may use for one line.  It splits only lines of at least
    ``_linestep.THREAD_MIN_WIDTH`` pixels (a full swath, not a 384-px patch): below that, starting a
    thread costs more than it saves."""
    global _kernel_threads
    limit = _linestep.MAX_THREADS if _linestep is not None else 64
    _kernel_threads = max(1, min(int(n), limit))


def check_kind(kind: str) -> str:
    """``kind`` if it names a stepper, else a ValueError that lists the choices."""
    if kind not in STEPPERS:
        raise ValueError(f"stepper must be one of {STEPPERS}, got {kind!r}")
    return kind


def _sizes(tensors: dict[str, np.ndarray]) -> tuple[int, int, int, int]:
    """``(bands, F1, F2, k)`` of a ScannerNet, read off its gate weights."""
    w1, w2 = tensors["cell1.gates.weight"], tensors["cell2.gates.weight"]
    f1 = w1.shape[0] // 4
    return w1.shape[1] - f1, f1, w2.shape[0] // 4, w1.shape[2]


def _halved_gates(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gate weights and biases (float32 copies) with the i, f, o rows halved, so that
    sigmoid(z) = (1 + tanh(z'))/2 and one tanh serves all four gates."""
    n = weight.shape[0] // 4
    weight, bias = weight.astype(np.float32), bias.astype(np.float32)
    weight[:3 * n] *= 0.5
    bias[:3 * n] *= 0.5
    return weight, bias


class _Conv:
    """A 'same' 1D convolution as one GEMM over an im2col copy of a padded ``rows`` buffer.

    ``rows`` is ``(channels, width + k - 1)``; the last row of the column matrix is ones, so the
    bias rides in the same product."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, rows: np.ndarray, width: int) -> None:
        out_channels, channels, k = weight.shape
        self.w = np.concatenate((weight.reshape(out_channels, channels * k), bias[:, None]), axis=1)
        self.w = np.ascontiguousarray(self.w, np.float32)
        step = rows.strides[1]
        self.windows = as_strided(rows, (channels, k, width), (rows.strides[0], step, step), writeable=False)
        cols = np.ones((channels * k + 1, width), np.float32)
        self.cols, self.all_cols = cols[:-1].reshape(channels, k, width), cols
        self.out = np.empty((out_channels, width), np.float32)

    def __call__(self) -> np.ndarray:
        np.copyto(self.cols, self.windows)
        return np.dot(self.w, self.all_cols, out=self.out)


class _Cell:
    """One ConvLSTM1d layer reading its ``[input; h]`` rows from the shared padded buffer."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, rows: np.ndarray, width: int) -> None:
        n = weight.shape[0] // 4
        self.conv = _Conv(*_halved_gates(weight, bias), rows, width)
        z = self.conv.out
        self.sig, (self.i, self.f, self.o, self.g) = z[:3 * n], np.split(z, 4)
        self.c = np.zeros((n, width), np.float32)
        self.tanh_c = np.empty((n, width), np.float32)

    def step(self, h_out: np.ndarray) -> None:
        z = self.conv()
        np.tanh(z, out=z)                                 # tanh(z_i/2), tanh(z_f/2), tanh(z_o/2), g
        np.multiply(self.sig, 0.5, out=self.sig)
        np.add(self.sig, 0.5, out=self.sig)               # i, f, o
        np.multiply(self.c, self.f, out=self.c)
        np.multiply(self.g, self.i, out=self.g)
        np.add(self.c, self.g, out=self.c)                # c = f*c + i*g
        np.tanh(self.c, out=self.tanh_c)
        np.multiply(self.o, self.tanh_c, out=h_out)       # h = o * tanh(c), written into the buffer


def _sigmoid_(x: np.ndarray) -> np.ndarray:
    """In place, through tanh (no overflow for any finite input)."""
    np.multiply(x, 0.5, out=x)
    np.tanh(x, out=x)
    np.multiply(x, 0.5, out=x)
    return np.add(x, 0.5, out=x)


class CpuStepper:
    """ScannerNet's step; ``input`` is where a caller may write the next line's model input."""

    def __init__(self, tensors: dict[str, np.ndarray], width: int) -> None:
        bands, f1, f2, k = _sizes(tensors)
        p = k // 2
        self.buf = np.zeros((bands + f1 + f2, width + 2 * p), np.float32)
        inner = slice(p, p + width)
        self.x, self.h1, self.h2 = self.buf[:bands, inner], self.buf[bands:bands + f1, inner], self.buf[bands + f1:, inner]
        self.input = self.x
        self.cell1 = _Cell(tensors["cell1.gates.weight"], tensors["cell1.gates.bias"], self.buf[:bands + f1], width)
        self.cell2 = _Cell(tensors["cell2.gates.weight"], tensors["cell2.gates.bias"], self.buf[bands:], width)
        self.head_w = tensors["head.weight"][:, :, 0].astype(np.float32)   # (1, F2)
        self.head_b = float(tensors["head.bias"][0])

    def logits(self, x: np.ndarray) -> np.ndarray:
        """``(bands, width)`` model input -> cloud logits ``(width,)``, a fresh array."""
        if x is not self.x:
            self.x[...] = x
        self.cell1.step(self.h1)
        self.cell2.step(self.h2)
        out = np.dot(self.head_w, self.h2)[0]
        return np.add(out, self.head_b, out=out)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return _sigmoid_(self.logits(x))

    def state_arrays(self) -> tuple[np.ndarray, ...]:
        return self.h1, self.cell1.c, self.h2, self.cell2.c

    def finite(self) -> bool:
        """Whether the recurrent state holds only finite numbers (h is bounded by |tanh| when c is)."""
        return bool(np.isfinite(self.cell1.c).all() and np.isfinite(self.cell2.c).all())


def _tap_groups(k: int) -> int:
    """Groups of three taps the kernel splits a k-tap convolution into (the last padded with zeros)."""
    return (k - 1) // 3 + 1


# Winograd F(4, 3)'s weight transform (points 0, -1, 1, 1/2, -2 and infinity, rows scaled to match
# the input transform in _linestep.c, which also holds the output transform): the six terms of
# three taps g0, g1, g2 are WINOGRAD_G @ (g0, g1, g2).
WINOGRAD_G = np.array([[2, 0, 0], [1 / 6, -1 / 6, 1 / 6], [1 / 6, 1 / 6, 1 / 6],
                       [32 / 15, 16 / 15, 8 / 15], [1 / 15, -2 / 15, 4 / 15], [0, 0, 2]])


def _pack_gates(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gate weights ``(4F, channels, k)`` as the kernel's Winograd F(4, 3) terms: per hidden channel,
    input channel and group of three taps, the six terms ``WINOGRAD_G @ (g0, g1, g2)`` of its gate
    rows i, f, o, g (i, f, o halved), computed in float64; biases ``(F, 4)``."""
    four_f, channels, k = weight.shape
    f, groups = four_f // 4, _tap_groups(k)
    weight, bias = _halved_gates(weight, bias)
    taps = np.zeros((4, f, channels, 3 * groups))
    taps[..., :k] = weight.reshape(4, f, channels, k)
    terms = taps.reshape(4, f, channels, groups, 3) @ WINOGRAD_G.T                 # (4, F, ch, groups, 6)
    return (np.ascontiguousarray(terms.transpose(1, 2, 3, 4, 0), np.float32).reshape(-1),
            np.ascontiguousarray(bias.reshape(4, f).T).reshape(-1))


class KernelStepper:
    """ScannerNet's step in the compiled kernel (``_linestep.step``): the same model as
    :class:`CpuStepper` (its convolutions in Winograd's F(4, 3) form), one call per line.  The
    padded buffer is a whole number of the kernel's pixel blocks wide plus whole groups of three
    taps, so the last block reads zeros, never past the end."""

    @staticmethod
    def fits(tensors: dict[str, np.ndarray]) -> bool:
        """Whether the kernel is built and takes these layer sizes (its per-block tile is bounded)."""
        if _linestep is None:
            return False
        bands, f1, f2, k = _sizes(tensors)
        return (max(bands, f2) + f1) * _tap_groups(k) <= _linestep.TILE_MAX

    def __init__(self, tensors: dict[str, np.ndarray], width: int) -> None:
        bands, f1, f2, k = _sizes(tensors)
        p, block = k // 2, _linestep.BLOCK
        padded = -(-width // block) * block
        self.buf = np.zeros((bands + f1 + f2, padded + 3 * _tap_groups(k) - 1), np.float32)
        inner = slice(p, p + width)
        self.h1, self.h2 = self.buf[bands:bands + f1, inner], self.buf[bands + f1:, inner]
        self.c1, self.c2 = np.zeros((f1, width), np.float32), np.zeros((f2, width), np.float32)
        self.scratch = np.empty((max(f1, f2) + 1, padded), np.float32)
        self.w1, self.b1 = _pack_gates(tensors["cell1.gates.weight"], tensors["cell1.gates.bias"])
        self.w2, self.b2 = _pack_gates(tensors["cell2.gates.weight"], tensors["cell2.gates.bias"])
        self.head = np.append(tensors["head.weight"].reshape(-1), tensors["head.bias"].reshape(-1)).astype(np.float32)
        self.dims = (bands, f1, f2, k, width)
        self.identity = np.ones(bands, np.float32), np.zeros(bands, np.float32)
        self.state_finite = True

    def step_samples(self, samples: np.ndarray, gain: np.ndarray, offset: np.ndarray,
                     probabilities: bool = True) -> tuple[np.ndarray, bool]:
        """One raw line ``(bands, width)`` (uint8, uint16 or float32 are read as they are) standardised
        per band as ``gain * sample + offset`` inside the call -> (output, whether it and the state
        are all finite).  The on-board path: no numpy pass over the line before the step."""
        if samples.dtype not in KERNEL_SAMPLES:   # a big-endian or float64 line: one conversion first
            samples = samples.astype(np.float32)
        out = np.empty(self.dims[-1], np.float32)
        self.state_finite = _linestep.step(samples, gain, offset, self.buf, self.c1, self.c2, self.scratch,
                                           self.w1, self.b1, self.w2, self.b2, self.head, out, *self.dims,
                                           probabilities, _kernel_threads)
        return out, self.state_finite

    def logits(self, x: np.ndarray) -> np.ndarray:
        """``(bands, width)`` model input -> cloud logits ``(width,)``, a fresh array."""
        return self.step_samples(np.asarray(x, np.float32), *self.identity, probabilities=False)[0]

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return self.step_samples(np.asarray(x, np.float32), *self.identity)[0]

    def state_arrays(self) -> tuple[np.ndarray, ...]:
        return self.h1, self.c1, self.h2, self.c2

    def finite(self) -> bool:
        """Whether the last line's output and the state it left are finite (checked in the call)."""
        return self.state_finite


class _Stateless:
    """A per-line model that keeps nothing between lines: only ``logits`` differs."""

    def logits(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return _sigmoid_(self.logits(x))

    def state_arrays(self) -> tuple[np.ndarray, ...]:
        return ()

    def finite(self) -> bool:
        return True


class BaselineStepper(_Stateless):
    """The 1D baseline: Conv1d(k9) ReLU, Conv1d(k9) ReLU, Conv1d(k1), each row on its own."""

    def __init__(self, tensors: dict[str, np.ndarray], width: int) -> None:
        w0, w2 = tensors["body.0.weight"], tensors["body.2.weight"]
        p0, p2 = w0.shape[2] // 2, w2.shape[2] // 2
        self.in_buf = np.zeros((w0.shape[1], width + 2 * p0), np.float32)
        self.mid_buf = np.zeros((w2.shape[1], width + 2 * p2), np.float32)
        self.input = self.in_buf[:, p0:p0 + width]
        self.mid = self.mid_buf[:, p2:p2 + width]
        self.conv0 = _Conv(w0, tensors["body.0.bias"], self.in_buf, width)
        self.conv2 = _Conv(w2, tensors["body.2.bias"], self.mid_buf, width)
        self.head_w = tensors["body.4.weight"][:, :, 0].astype(np.float32)
        self.head_b = float(tensors["body.4.bias"][0])

    def logits(self, x: np.ndarray) -> np.ndarray:
        if x is not self.input:
            self.input[...] = x
        np.maximum(self.conv0(), 0.0, out=self.mid)
        hidden = np.maximum(self.conv2(), 0.0, out=self.conv2.out)
        out = np.dot(self.head_w, hidden)[0]
        return np.add(out, self.head_b, out=out)


class ThresholdStepper(_Stateless):
    """Cloud where the mean of the first three bands (R, G, B reflectance) exceeds ``t``."""

    SHARPNESS = 50.0  # as models.BrightnessThreshold: probability 0.5 exactly at t

    def __init__(self, t: float, width: int, bands: int) -> None:
        self.t = float(t)
        self.input = np.empty((bands, width), np.float32)

    def logits(self, x: np.ndarray) -> np.ndarray:
        out = x[:3].mean(axis=0, dtype=np.float32)
        np.subtract(out, self.t, out=out)
        return np.multiply(out, self.SHARPNESS, out=out)


def describe(stepper) -> str:
    """The stepper a line runs on, and why when it is not the compiled kernel: what the segmenter's
    start-up log, its diagnostics and the demo print."""
    if isinstance(stepper, KernelStepper):   # the instruction set: what a board's build should show
        return f"kernel (compiled ScannerNet step, {_linestep.ISA})"
    if isinstance(stepper, CpuStepper):
        why = KERNEL_MISSING or "the layer sizes exceed the kernel's tile, or stepper 'numpy' was asked for"
        return f"numpy ({why})"
    return type(stepper).__name__


def make_cpu_stepper(architecture: str, tensors: dict[str, np.ndarray], config: dict, width: int, bands: int,
                     compiled: bool = True):
    """The CPU stepper of a streaming architecture; a ValueError for a whole-image one.

    ScannerNet takes the compiled kernel when it is built and ``compiled`` is true, else numpy."""
    if architecture in ("scannernet", "scannernet_small"):
        if compiled and KernelStepper.fits(tensors):
            return KernelStepper(tensors, width)
        return CpuStepper(tensors, width)
    if architecture == "baseline1d":
        return BaselineStepper(tensors, width)
    if architecture == "threshold":
        return ThresholdStepper(config.get("t", 0.26), width, bands)
    raise ValueError(f"{architecture} segments whole images only; it cannot run per line")
