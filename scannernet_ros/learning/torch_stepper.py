"""Per-line inference through torch: for CUDA, and the model's own ``step`` that the numpy
steppers of :mod:`.stepper` are checked and benchmarked against.

- :class:`FusedStepper` (ScannerNet on any device): torch ops on preallocated buffers.
- :class:`ModelStepper` (any streaming model): the model's own ``step``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from .models import ScannerNet


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


def make_torch_stepper(net: nn.Module, width: int, device: torch.device, kind: str):
    """``torch``: :class:`FusedStepper` for ScannerNet (the model's step otherwise); ``plain``:
    the model's own step."""
    if kind == "torch" and isinstance(net, ScannerNet):
        return FusedStepper(net, width, device)
    return ModelStepper(net, width, device)
