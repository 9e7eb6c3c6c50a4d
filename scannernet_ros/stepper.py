"""Per-line inference without per-line allocation or Python-level reshuffling.

Three ways to step a streaming model, all equal to ``ScannerNet.step`` to 1e-6:

- :class:`CpuStepper` (ScannerNet on the CPU, the on-board case): both gate convolutions as one
  MKL matrix product each over an im2col copy, and the gate math in numpy ufuncs on the same
  memory.  At one 384-pixel line the tensors are a few kB, so per-call overhead and the
  transcendental kernels decide: numpy's float32 ``tanh`` is about 5x faster than torch's here and
  its calls cost about half as much.  Sigmoids are taken as ``(1 + tanh(z / 2)) / 2`` with the
  halving folded into the weights, so each layer needs one ``tanh`` over all four gates.
- :class:`FusedStepper` (ScannerNet on any device): torch ops on preallocated buffers.
- :class:`ModelStepper` (any streaming model): the model's own ``step``.

``scannernet bench`` times them side by side.
"""
from __future__ import annotations

import numpy as np
import torch
from numpy.lib.stride_tricks import as_strided
from torch import Tensor, nn

from .models import ConvLSTM1d, ScannerNet


class ModelStepper:
    """Any streaming model through its own ``step``; state kept between calls."""

    def __init__(self, net: nn.Module, width: int, device: torch.device) -> None:
        self.net = net
        self.device = device
        self.state = net.init_state(1, width, device=device)

    def step(self, x: Tensor) -> Tensor:
        """``(1, bands, width)`` -> logits ``(1, width)``."""
        logits, self.state = self.net.step(x, self.state)
        return logits[0]

    @torch.inference_mode()
    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """``(bands, width)`` float32 model input -> cloud probability ``(width,)``."""
        return self.step(torch.from_numpy(x).to(self.device)[None]).sigmoid_()[0].cpu().numpy()

    def state_tensors(self) -> tuple[Tensor, ...]:
        return self.state

    def finite(self) -> bool:
        """Whether the recurrent state holds only finite numbers."""
        return all(bool(torch.isfinite(t).all()) for t in self.state_tensors())


class FusedStepper(ModelStepper):
    """ScannerNet's step on preallocated torch buffers, for any device.

    One zero-padded buffer holds ``[x; h1; h2]``: layer 1 convolves its first ``bands + F1``
    channels, layer 2 its last ``F1 + F2``, so ``h1`` is written once and read by both.
    """

    def __init__(self, net: ScannerNet, width: int, device: torch.device) -> None:
        c1, c2 = net.cell1, net.cell2
        dtype = c1.gates.weight.dtype
        p = c1.gates.kernel_size[0] // 2
        bands, self.f1, self.f2 = c1.in_channels, c1.hidden_channels, c2.hidden_channels
        self.device = device
        self.buf = torch.zeros(1, bands + self.f1 + self.f2, width + 2 * p, device=device, dtype=dtype)
        self.in1, self.in2 = self.buf[:, :bands + self.f1], self.buf[:, bands:]
        inner = slice(p, p + width)
        self.x = self.buf[:, :bands, inner]
        self.h1 = self.buf[:, bands:bands + self.f1, inner]
        self.h2 = self.buf[:, bands + self.f1:, inner]
        self.c1 = torch.zeros(1, self.f1, width, device=device, dtype=dtype)
        self.c2 = torch.zeros(1, self.f2, width, device=device, dtype=dtype)
        self.w1, self.b1 = c1.gates.weight.detach(), c1.gates.bias.detach()
        self.w2, self.b2 = c2.gates.weight.detach(), c2.gates.bias.detach()
        self.head_w = net.head.weight.detach()[:, :, 0]            # (1, F2)
        self.head_b = net.head.bias.detach()[:, None]              # (1, 1)

    @staticmethod
    def _cell(inputs: Tensor, w: Tensor, b: Tensor, c: Tensor, h_out: Tensor, n: int) -> None:
        z = torch.conv1d(inputs, w, b)
        z[:, :3 * n].sigmoid_()
        g = z[:, 3 * n:].tanh_()
        c.mul_(z[:, n:2 * n]).addcmul_(z[:, :n], g)               # c = f*c + i*g
        torch.tanh(c, out=g)                                       # g is spent: reuse it for tanh(c)
        torch.mul(z[:, 2 * n:3 * n], g, out=h_out)                # h = o * tanh(c), written in place

    def step(self, x: Tensor) -> Tensor:
        self.x.copy_(x)
        self._cell(self.in1, self.w1, self.b1, self.c1, self.h1, self.f1)
        self._cell(self.in2, self.w2, self.b2, self.c2, self.h2, self.f2)
        return torch.addmm(self.head_b, self.head_w, self.h2[0])

    def state_tensors(self) -> tuple[Tensor, ...]:
        return self.h1, self.c1, self.h2, self.c2


DIRECT_CONV_FROM = 2048  # px: from here oneDNN's direct convolution beats im2col + GEMM on this CPU


class _CpuCell:
    """One ConvLSTM1d layer reading its ``[input; h]`` rows from the shared padded buffer.

    Narrow lines go through im2col + one MKL GEMM (lowest call overhead); wide lines through
    oneDNN's direct convolution, which skips the im2col copy that then no longer fits in cache.
    """

    def __init__(self, cell: ConvLSTM1d, rows: np.ndarray, width: int) -> None:
        n, k = cell.hidden_channels, cell.gates.kernel_size[0]
        channels = rows.shape[0]
        w = cell.gates.weight.detach().to(torch.float32).clone()
        b = cell.gates.bias.detach().to(torch.float32).clone()
        w[:3 * n] *= 0.5                                   # i, f, o: sigmoid(z) = (1 + tanh(z / 2)) / 2
        b[:3 * n] *= 0.5
        self.n = n
        self.direct = width >= DIRECT_CONV_FROM
        if self.direct:
            self.w3, self.b1 = w.contiguous(), b.contiguous()
            self.rows_t = torch.from_numpy(rows)[None]      # (1, channels, width + k - 1), a view
        else:
            # im2col: row (channel, tap) is the channel's padded row shifted by tap; a last row of
            # ones carries the bias through the same GEMM
            self.w = torch.cat((w.reshape(4 * n, channels * k), b[:, None]), dim=1).contiguous()
            step = rows.strides[1]
            self.windows = as_strided(rows, (channels, k, width), (rows.strides[0], step, step), writeable=False)
            cols = np.ones((channels * k + 1, width), np.float32)
            self.cols = cols[:-1].reshape(channels, k, width)
            self.cols_t = torch.from_numpy(cols)
            self.z = np.empty((4 * n, width), np.float32)   # gate pre-activations, then activations
            self.z_t = torch.from_numpy(self.z)
            self.sig = self.z[:3 * n]
            self.i, self.f, self.o, self.g = np.split(self.z, 4)
        self.c = np.zeros((n, width), np.float32)
        self.tanh_c = np.empty((n, width), np.float32)

    def step(self, h_out: np.ndarray) -> None:
        if self.direct:
            z = torch.conv1d(self.rows_t, self.w3, self.b1)[0].numpy()
            n = self.n
            sig, i, f, o, g = z[:3 * n], z[:n], z[n:2 * n], z[2 * n:3 * n], z[3 * n:]
        else:
            np.copyto(self.cols, self.windows)
            torch.mm(self.w, self.cols_t, out=self.z_t)
            z, sig, i, f, o, g = self.z, self.sig, self.i, self.f, self.o, self.g
        np.tanh(z, out=z)                                 # tanh(z_i/2), tanh(z_f/2), tanh(z_o/2), g
        np.multiply(sig, 0.5, out=sig)
        np.add(sig, 0.5, out=sig)                         # i, f, o
        np.multiply(self.c, f, out=self.c)
        np.multiply(g, i, out=g)
        np.add(self.c, g, out=self.c)                     # c = f*c + i*g
        np.tanh(self.c, out=self.tanh_c)
        np.multiply(o, self.tanh_c, out=h_out)            # h = o * tanh(c), written into the buffer


class CpuStepper:
    """ScannerNet's step on the CPU with numpy gate math; see the module docstring for why.

    ``[x; h1; h2]`` share one zero-padded buffer, as in :class:`FusedStepper`.
    """

    def __init__(self, net: ScannerNet, width: int) -> None:
        c1, c2 = net.cell1, net.cell2
        p = c1.gates.kernel_size[0] // 2
        bands, f1 = c1.in_channels, c1.hidden_channels
        self.buf = np.zeros((bands + f1 + c2.hidden_channels, width + 2 * p), np.float32)
        inner = slice(p, p + width)
        self.x, self.h1, self.h2 = self.buf[:bands, inner], self.buf[bands:bands + f1, inner], self.buf[bands + f1:, inner]
        self.input = self.x  # where a caller may write the next line's model input directly
        self.cell1 = _CpuCell(c1, self.buf[:bands + f1], width)
        self.cell2 = _CpuCell(c2, self.buf[bands:], width)
        self.head_w = net.head.weight.detach().to(torch.float32)[:, :, 0].numpy().copy()   # (1, F2)
        self.head_b = float(net.head.bias.detach()[0])
        self.half_w, self.half_b = self.head_w * 0.5, self.head_b * 0.5  # sigmoid(l) = (1 + tanh(l / 2)) / 2
        self.out = np.empty((1, width), np.float32)

    def _advance(self, x: np.ndarray) -> None:
        if x is not self.x:
            self.x[...] = x
        self.cell1.step(self.h1)
        self.cell2.step(self.h2)

    def _logits(self, x: np.ndarray) -> np.ndarray:
        self._advance(x)
        np.dot(self.head_w, self.h2, out=self.out)
        return np.add(self.out, self.head_b, out=self.out)[0]

    def step(self, x: Tensor) -> Tensor:
        """``(1, bands, width)`` -> logits ``(1, width)``; the torch-facing twin of :meth:`probabilities`."""
        return torch.from_numpy(self._logits(x[0].cpu().numpy()).copy())[None]

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """``(bands, width)`` float32 model input -> cloud probability ``(width,)``, a fresh array."""
        self._advance(x)
        prob = np.dot(self.half_w, self.h2)[0]            # l / 2
        np.add(prob, self.half_b, out=prob)
        np.tanh(prob, out=prob)
        np.multiply(prob, 0.5, out=prob)
        return np.add(prob, 0.5, out=prob)                # sigmoid(l) = (1 + tanh(l / 2)) / 2

    def state_tensors(self) -> tuple[Tensor, ...]:
        return tuple(torch.from_numpy(a)[None] for a in (self.h1, self.cell1.c, self.h2, self.cell2.c))

    def finite(self) -> bool:
        """Whether the recurrent state holds only finite numbers (h is bounded by |tanh| when c is)."""
        return bool(np.isfinite(self.cell1.c).all() and np.isfinite(self.cell2.c).all())


STEPPERS = ("auto", "torch", "plain")


def check_kind(kind: str) -> str:
    """``kind`` if it names a stepper, else a ValueError that lists the choices."""
    if kind not in STEPPERS:
        raise ValueError(f"stepper must be one of {STEPPERS}, got {kind!r}")
    return kind


def make_stepper(net: nn.Module, width: int, device: torch.device, kind: str = "auto"):
    """``auto``: the fastest for this model and device; ``torch``: :class:`FusedStepper`;
    ``plain``: the model's own step (what the others are checked and benchmarked against)."""
    check_kind(kind)
    if kind != "plain" and isinstance(net, ScannerNet):
        if kind == "auto" and device.type == "cpu" and net.cell1.gates.weight.dtype == torch.float32:
            return CpuStepper(net, width)
        return FusedStepper(net, width, device)
    return ModelStepper(net, width, device)
