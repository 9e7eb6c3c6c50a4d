"""The model zoo: ScannerNet and its comparison networks, behind one name registry.

Every model takes a normalised image ``(batch, bands, rows, width)`` and returns cloud logits
``(batch, 1, rows, width)``.  Models that can run one image row at a time (``streams = True``)
also expose ``init_state(batch, width)`` and ``step(line, state)``; their ``forward`` walks the
rows through that same ``step`` so whole-image and per-line inference cannot drift apart.

Layouts and parameter counts follow Lafarge & Bahl (IGARSS 2022) for ScannerNet and the 1D
baseline, and Bahl et al. (ICCV-W 2019) for C-FCN and C-UNet++.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ..zoo import ZOO

State = tuple[Tensor, ...]


class ConvLSTM1d(nn.Module):
    """A 1D ConvLSTM cell without peepholes, its four gates fused into one convolution.

    One Conv1d over ``[x_t; h_{t-1}]`` yields ``i, f, o, g`` (in that order), which is both the
    paper's parameter layout and the cheapest way to evaluate the cell.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv1d(in_channels + hidden_channels, 4 * hidden_channels,
                               kernel_size, padding=kernel_size // 2)

    def init_state(self, batch: int, width: int, device=None, dtype=None) -> tuple[Tensor, Tensor]:
        shape = (batch, self.hidden_channels, width)
        return (torch.zeros(shape, device=device, dtype=dtype),
                torch.zeros(shape, device=device, dtype=dtype))

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        z = self.gates(torch.cat((x, h), dim=1))
        n = self.hidden_channels
        i, f, o = torch.sigmoid(z[:, :3 * n]).chunk(3, dim=1)
        g = torch.tanh(z[:, 3 * n:])
        c = torch.addcmul(f * c, i, g)
        h = o * torch.tanh(c)
        return h, c


class ScannerNet(nn.Module):
    """Two stacked ConvLSTM1d layers stepped once per image row, then a 1x1 head to one logit."""

    streams = True

    def __init__(self, in_channels: int = 3, hidden: tuple[int, int] = (4, 8),
                 kernel_size: int = 9) -> None:
        super().__init__()
        self.cell1 = ConvLSTM1d(in_channels, hidden[0], kernel_size)
        self.cell2 = ConvLSTM1d(hidden[0], hidden[1], kernel_size)
        self.head = nn.Conv1d(hidden[1], 1, kernel_size=1)

    def init_state(self, batch: int, width: int, device=None, dtype=None) -> State:
        p = next(self.parameters())
        device = p.device if device is None else device
        dtype = p.dtype if dtype is None else dtype
        return (*self.cell1.init_state(batch, width, device, dtype),
                *self.cell2.init_state(batch, width, device, dtype))

    def step(self, line: Tensor, state: State) -> tuple[Tensor, State]:
        """One row ``(batch, bands, width)`` -> logits ``(batch, 1, width)`` and the next state."""
        h1, c1, h2, c2 = state
        h1, c1 = self.cell1(line, (h1, c1))
        h2, c2 = self.cell2(h1, (h2, c2))
        return self.head(h2), (h1, c1, h2, c2)

    def scan(self, image: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Walk the rows of ``image`` through ``step``; returns logits and the state after the last row.

        Carrying the returned state into the next call is how training strips and long scenes
        continue without a reset.
        """
        if state is None:
            state = self.init_state(image.shape[0], image.shape[-1], image.device, image.dtype)
        rows = []
        for r in range(image.shape[2]):
            logit, state = self.step(image[:, :, r], state)
            rows.append(logit)
        return torch.stack(rows, dim=2), state

    def forward(self, image: Tensor) -> Tensor:
        return self.scan(image)[0]


@torch.no_grad()
def widen(small: ScannerNet, big: ScannerNet, noise: float = 1e-2, generator: torch.Generator | None = None) -> None:
    """Load ``small`` into the larger ``big`` so that ``big`` starts out computing (almost) what
    ``small`` computes (function-preserving widening, as in Net2Net).

    Each of small's units keeps its weights in the same gate slot of ``big``; shorter kernels sit
    centred in longer ones.  Everything ``big`` has beyond that (extra taps, extra units and their
    head weights) gets ``noise``-sized random values: not zero, so that the new units receive
    gradients, and small enough to leave the function where it was.
    """
    pairs = ((small.cell1, big.cell1), (small.cell2, big.cell2))
    for s, b in pairs:
        if (s.in_channels != b.in_channels or s.hidden_channels > b.hidden_channels
                or s.gates.kernel_size[0] > b.gates.kernel_size[0]):
            raise ValueError("widen needs a network at least as wide, with kernels at least as long")
    for p in big.parameters():
        p.copy_(torch.randn(p.shape, generator=generator) * noise)
    for s, b in pairs:
        ns, nb, xs = s.hidden_channels, b.hidden_channels, s.in_channels
        offset = (b.gates.kernel_size[0] - s.gates.kernel_size[0]) // 2
        taps = slice(offset, offset + s.gates.kernel_size[0])
        for gate in range(4):  # i, f, o, g: rows [gate * n, gate * n + n)
            rows_s, rows_b = slice(gate * ns, gate * ns + ns), slice(gate * nb, gate * nb + ns)
            b.gates.bias[rows_b] = s.gates.bias[rows_s]
            b.gates.weight[rows_b, :xs + ns, taps] = s.gates.weight[rows_s, :, :]  # [x; h] -> same slots
    big.head.weight[:, :small.head.in_channels] = small.head.weight
    big.head.bias.copy_(small.head.bias)


class Baseline1D(nn.Module):
    """The paper's non-recurrent 1D baseline: each row is segmented on its own."""

    streams = True

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(in_channels, 8, 9, padding=4), nn.ReLU(inplace=True),
            nn.Conv1d(8, 16, 9, padding=4), nn.ReLU(inplace=True),
            nn.Conv1d(16, 1, 1),
        )

    def init_state(self, batch: int, width: int, device=None, dtype=None) -> State:
        return ()

    def step(self, line: Tensor, state: State) -> tuple[Tensor, State]:
        return self.body(line), state

    def scan(self, image: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        b, c, h, w = image.shape
        rows = image.permute(0, 2, 1, 3).reshape(b * h, c, w)
        logits = self.body(rows).reshape(b, h, 1, w).permute(0, 2, 1, 3)
        return logits, ()

    def forward(self, image: Tensor) -> Tensor:
        return self.scan(image)[0]


class DepthwiseSeparable(nn.Sequential):
    """Depthwise 3x3 then pointwise 1x1, both with bias (the building block of C-FCN and C-UNet++)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels),
            nn.Conv2d(in_channels, out_channels, 1),
        )


class CFCN(nn.Module):
    """C-FCN (Bahl et al. 2019): three separable stages, two poolings, x4 bilinear upsampling."""

    streams = False

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            DepthwiseSeparable(in_channels, 10), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            DepthwiseSeparable(10, 20), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            DepthwiseSeparable(20, 40), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(40, 1, 1)

    def forward(self, image: Tensor) -> Tensor:
        logits = self.classifier(self.features(image))
        return nn.functional.interpolate(logits, size=image.shape[-2:], mode="bilinear",
                                         align_corners=False)


class CUNetPP(nn.Module):
    """C-UNet++ after Bahl et al. (2019): the published layer list with additive skip connections.

    The layers are those of the public re-implementations (8,457 parameters); the paper's 9,129
    cannot be reproduced from any documented layout.  Skips are added rather than concatenated, so
    they cost no parameters and the count stays that of the documented layer list.
    """

    streams = False

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        relu = nn.ReLU(inplace=True)
        self.enc1 = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), relu)
        self.enc2 = nn.Sequential(DepthwiseSeparable(8, 16), relu)
        self.enc3 = nn.Sequential(DepthwiseSeparable(16, 32), relu)
        self.pool = nn.MaxPool2d(2)
        self.up3 = nn.Sequential(nn.ConvTranspose2d(32, 32, 2, stride=2), relu)
        self.up2 = nn.Sequential(nn.ConvTranspose2d(32, 16, 2, stride=2), relu)
        self.up1 = nn.Sequential(nn.ConvTranspose2d(16, 8, 2, stride=2), relu)
        self.refine = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), relu)
        self.classifier = nn.Conv2d(8, 1, 1)

    def forward(self, image: Tensor) -> Tensor:
        h, w = image.shape[-2:]
        pad_h, pad_w = (-h) % 8, (-w) % 8  # three poolings need sizes divisible by 8
        x = nn.functional.pad(image, (0, pad_w, 0, pad_h), mode="replicate")
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        d3 = self.up3(self.pool(e3)) + e3
        d2 = self.up2(d3) + e2
        d1 = self.up1(d2) + e1
        return self.classifier(self.refine(d1))[..., :h, :w]


class BrightnessThreshold(nn.Module):
    """The reference every learned model is judged against: cloud where the mean of the R, G, B
    reflectance exceeds ``t``.

    It has no learnable parameters; ``t`` is fitted on training data (:func:`train.fit_threshold`)
    and kept in the weights metadata.  Its input scaling is the identity (mean 0, std 1), so the
    normalised input it sees is reflectance, with R, G, B as the first three bands.  It runs per
    line, so the segmenter can run it live like any streaming model.
    """

    streams = True
    SHARPNESS = 50.0  # logit per unit of reflectance: probability 0.5 exactly at t

    def __init__(self, in_channels: int = 3, t: float = 0.26) -> None:
        super().__init__()
        if in_channels < 3:
            raise ValueError(f"threshold needs R, G, B (3 bands at least), got {in_channels}")
        self.t = float(t)

    def init_state(self, batch: int, width: int, device=None, dtype=None) -> State:
        return ()

    def step(self, line: Tensor, state: State) -> tuple[Tensor, State]:
        brightness = line[:, :3].mean(dim=1, keepdim=True)
        return (brightness - self.t) * self.SHARPNESS, state

    def scan(self, image: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        return (image[:, :3].mean(dim=1, keepdim=True) - self.t) * self.SHARPNESS, ()

    def forward(self, image: Tensor) -> Tensor:
        return self.scan(image)[0]


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: how to build a model by name and what the paper says of it."""

    name: str
    build: Callable[..., nn.Module]
    config: dict
    summary: str


CLASSES = {"scannernet": ScannerNet, "scannernet_small": ScannerNet, "baseline1d": Baseline1D, "cfcn": CFCN,
           "cunetpp": CUNetPP, "threshold": BrightnessThreshold}
REGISTRY: dict[str, ModelSpec] = {
    name: ModelSpec(name, CLASSES[name], entry.config, entry.summary) for name, entry in ZOO.items()
}


def build_model(name: str, in_channels: int = 3, **overrides) -> nn.Module:
    """Build a registered model, e.g. ``build_model("scannernet_small")``."""
    try:
        spec = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}") from None
    config = {**spec.config, **overrides}
    return spec.build(in_channels=in_channels, **config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def state_bytes_per_pixel(model: nn.Module) -> int:
    """Recurrent state carried between lines, in bytes per pixel of line width (0 if none)."""
    if not getattr(model, "streams", False):
        return 0
    return sum(t.numel() * t.element_size() for t in model.init_state(1, 1))


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without CUDA is an error, not a silent fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    return torch.device(device)
