"""Memory figures comparable with the paper's Table 2.

The paper reports torchinfo's "forward/backward pass size" of one forward pass: a 384x384 image for
the 2D networks and, since ScannerNet and the baseline process one line per pass, one 384-pixel
line for them (that reproduces the paper's 0.08 / 0.10 / 0.15 MB).
"""
from __future__ import annotations

import torch
from torch import nn

from .models import build_model

PAPER_TABLE2_MB = {"baseline1d": 0.08, "cfcn": 28.62, "cunetpp": 47.19, "scannernet_small": 0.10, "scannernet": 0.15}


class OneStep(nn.Module):
    """A streaming model's per-line pass as a plain forward, for torchinfo."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, line: torch.Tensor) -> torch.Tensor:
        return self.net.step(line, self.net.init_state(line.shape[0], line.shape[-1]))[0]


def torchinfo_mb(name: str, size: int = 384, bands: int = 3) -> float:
    """torchinfo's forward/backward pass size in MB for one pass (line or image)."""
    from torchinfo import summary
    net = build_model(name, in_channels=bands)
    if net.streams:
        stats = summary(OneStep(net), input_size=(1, bands, size), verbose=0, device="cpu")
    else:
        stats = summary(net, input_size=(1, bands, size, size), verbose=0, device="cpu")
    return stats.total_output_bytes / 1e6
