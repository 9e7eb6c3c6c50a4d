"""Clouds from ``satellite-cloud-generator`` composited over real training crops.

The generator (a PyPI package, torch and kornia) draws cloud opacity fields; it costs 0.1 to 0.2 s
per 128-px field on one CPU thread, so a bank of fields is drawn once per training run and each
composited crop takes one of them, flipped or turned.  The crop keeps its real ground; the label
becomes cloud where the added opacity exceeds :data:`LABEL_OPACITY` (thin cloud counts, as in L8
Biome), and no-data pixels stay no data.
"""
from __future__ import annotations

import random

import numpy as np
import torch

CONFIGS = ("WIDE_CONFIG", "BIG_CONFIG", "LOCAL_CONFIG", "THIN_CONFIG")
LABEL_OPACITY = 0.2
BANK_SIZE = 48


def cloud_bank(size: int, bands: int, seed: int, count: int = BANK_SIZE) -> torch.Tensor:
    """``(count, bands, size, size)`` cloud opacities in [0, 1], reproducible from ``seed`` and
    without touching the training run's own random streams."""
    try:
        import satellite_cloud_generator as scg
    except ImportError:
        raise ValueError("--composite needs satellite-cloud-generator and kornia "
                         "(pip install --no-deps satellite-cloud-generator kornia kornia_rs)") from None
    fields = []
    state = random.getstate()
    with torch.random.fork_rng():
        random.seed(seed)
        torch.manual_seed(seed)
        for i in range(count):
            config = getattr(scg, CONFIGS[i % len(CONFIGS)])
            _, cloud = scg.add_cloud(torch.zeros(1, bands, size, size), return_cloud=True, **config)
            fields.append(cloud[0].float().clamp(0.0, 1.0))
    random.setstate(state)
    return torch.stack(fields)


def composite(x: torch.Tensor, y: torch.Tensor, bank: torch.Tensor,
              rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``(bands, h, w)`` reflectance crop and its ``(h, w)`` target under a cloud of the bank."""
    alpha = bank[rng.integers(len(bank))][:, :x.shape[1], :x.shape[2]]
    if rng.random() < 0.5:
        alpha = alpha.flip(-1)
    if rng.random() < 0.5:
        alpha = alpha.transpose(-1, -2)
    brightness = rng.uniform(0.6, 1.0) * rng.uniform(0.95, 1.05, size=(x.shape[0], 1, 1))
    x = x * (1.0 - alpha) + alpha * torch.from_numpy(brightness.astype(np.float32))
    cloud = (alpha.mean(0) > LABEL_OPACITY).to(y.dtype)
    return x, torch.where(y < 0, y, torch.maximum(y, cloud))
