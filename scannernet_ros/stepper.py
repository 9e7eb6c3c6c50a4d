"""Per-line inference without per-line allocation or Python-level reshuffling.

:class:`FusedStepper` evaluates exactly ``ScannerNet.step`` but keeps ``[x; h1]`` and
``[h1; h2]`` in zero-padded buffers that the convolutions read directly: the hidden states are
written into place instead of concatenated, gate activations run in place, and the 1x1 head is
one matrix product.  That halves the per-line time of the eager model on one CPU thread (the
benchmark shows the figures).  :class:`ModelStepper` is the plain path for any streaming model.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .models import ScannerNet


class ModelStepper:
    """Any streaming model through its own ``step``; state kept between calls."""

    def __init__(self, net: nn.Module, width: int, device: torch.device) -> None:
        self.net = net
        self.state = net.init_state(1, width, device=device)

    def step(self, x: Tensor) -> Tensor:
        """``(1, bands, width)`` -> logits ``(1, width)``."""
        logits, self.state = self.net.step(x, self.state)
        return logits[0]

    def state_tensors(self) -> tuple[Tensor, ...]:
        return self.state


class FusedStepper:
    """ScannerNet's step on preallocated buffers; must agree with ``ScannerNet.step`` to 1e-6."""

    def __init__(self, net: ScannerNet, width: int, device: torch.device) -> None:
        c1, c2 = net.cell1, net.cell2
        dtype = c1.gates.weight.dtype
        k = c1.gates.kernel_size[0]
        self.pad = p = k // 2
        self.f1, self.f2 = c1.hidden_channels, c2.hidden_channels
        zeros = lambda *shape: torch.zeros(shape, device=device, dtype=dtype)  # noqa: E731
        self.buf1 = zeros(1, c1.in_channels + self.f1, width + 2 * p)   # [x; h1], zero margins
        self.buf2 = zeros(1, self.f1 + self.f2, width + 2 * p)          # [h1; h2], zero margins
        self.c1, self.c2 = zeros(1, self.f1, width), zeros(1, self.f2, width)
        self.tmp1, self.tmp2 = zeros(1, self.f1, width), zeros(1, self.f2, width)
        inner = slice(p, p + width)
        self.x = self.buf1[:, :c1.in_channels, inner]
        self.h1 = self.buf1[:, c1.in_channels:, inner]
        self.h1_next = self.buf2[:, :self.f1, inner]
        self.h2 = self.buf2[:, self.f1:, inner]
        self.w1, self.b1 = c1.gates.weight.detach(), c1.gates.bias.detach()
        self.w2, self.b2 = c2.gates.weight.detach(), c2.gates.bias.detach()
        self.head_w = net.head.weight.detach()[:, :, 0]            # (1, F2)
        self.head_b = net.head.bias.detach()[:, None]              # (1, 1)

    @staticmethod
    def _cell(buf: Tensor, w: Tensor, b: Tensor, c: Tensor, tmp: Tensor, h_out: Tensor, n: int) -> None:
        z = torch.conv1d(buf, w, b)
        z[:, :3 * n].sigmoid_()
        z[:, 3 * n:].tanh_()
        c.mul_(z[:, n:2 * n]).addcmul_(z[:, :n], z[:, 3 * n:])     # c = f*c + i*g
        torch.tanh(c, out=tmp)
        torch.mul(z[:, 2 * n:3 * n], tmp, out=h_out)              # h = o * tanh(c)

    def step(self, x: Tensor) -> Tensor:
        """``(1, bands, width)`` -> logits ``(1, width)``."""
        self.x.copy_(x)
        self._cell(self.buf1, self.w1, self.b1, self.c1, self.tmp1, self.h1, self.f1)
        self.h1_next.copy_(self.h1)
        self._cell(self.buf2, self.w2, self.b2, self.c2, self.tmp2, self.h2, self.f2)
        return torch.addmm(self.head_b, self.head_w, self.h2[0])

    def state_tensors(self) -> tuple[Tensor, ...]:
        return self.h1, self.c1, self.h2, self.c2


def make_stepper(net: nn.Module, width: int, device: torch.device, fused: bool = True):
    if fused and isinstance(net, ScannerNet):
        return FusedStepper(net, width, device)
    return ModelStepper(net, width, device)
