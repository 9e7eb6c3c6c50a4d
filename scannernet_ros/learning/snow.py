"""Snow and ice painted over the clear ground of training crops, for band sets with SWIR1.

In R, G and B, snow has cloud's colour; at 1.6 um (SWIR1) snow and ice absorb (reflectance about
0.01 to 0.2) while cloud droplets scatter (0.3 and more).  The labelled data here hold only a few
snow scenes, and none when the snow biome is held out, so a SWIR model sees no ground that is
bright in the visible and dark at 1.6 um, and calls snow cloud.  Painting such ground, labelled
clear, over a share of the crops teaches what the band is there for.  It is only offered with
SWIR1: without it, white clear ground would teach an R, G, B model to miss cloud.

The spectrum spans fresh snow to aged snow and ice as top-of-atmosphere reflectance (red 0.4 to
0.95, blue up to a tenth above it from the atmosphere's scattering, NIR 0.8 to 1.0 of red, SWIR1
0.01 to 0.2: fine fresh grains reflect more at 1.6 um than coarse old ones), shaded by a smooth
field (slopes facing away from the sun), with a fine texture; its outline is a thresholded smooth
random field with soft edges, covering 20 to 100 % of the crop.  Cloud and no-data pixels are left
as they are.  Clouds of ice crystals are darker at 1.6 um than water clouds too, so the top of the
range is where a model may learn to miss them.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

BAND = "swir1"


def check_bands(bands: tuple[str, ...]) -> None:
    """A ValueError unless ``bands`` has SWIR1, which is what tells the painted snow from cloud."""
    if BAND not in bands:
        raise ValueError(f"--snow needs SWIR1 among the bands (--bands rgbns), got {', '.join(bands)}: "
                         "in R, G, B snow has cloud's colour, and painted snow would teach the model to miss cloud")


def _smooth_field(size: tuple[int, int], cells: int, rng: np.random.Generator) -> torch.Tensor:
    """(h, w) values in [0, 1] varying over about ``cells`` cells per side."""
    coarse = torch.from_numpy(rng.random((1, 1, cells + 1, cells + 1)).astype(np.float32))
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=True)[0, 0]


def snow_spectrum(bands: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    """(bands,) reflectance of one snow or ice surface, in the order of ``bands``."""
    visible = rng.uniform(0.4, 0.95)
    per_band = {"red": visible, "green": visible * rng.uniform(0.93, 1.0), "blue": visible * rng.uniform(1.0, 1.1),
                "nir": visible * rng.uniform(0.8, 1.0), "swir1": rng.uniform(0.01, 0.2)}
    return np.array([per_band[b] for b in bands], np.float32)


def paint_snow(x: torch.Tensor, y: torch.Tensor, bands: tuple[str, ...],
               rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``(bands, h, w)`` reflectance crop with snow over part of its clear ground; the
    ``(h, w)`` target is returned unchanged (snow is clear ground)."""
    size = tuple(x.shape[1:])
    outline = _smooth_field(size, int(rng.integers(2, 9)), rng)
    cut = torch.quantile(outline.flatten(), float(rng.uniform(0.0, 0.8)))
    alpha = ((outline - cut) / 0.05).clamp(0.0, 1.0) * (y == 0).to(x.dtype)
    shade = 0.5 + 0.5 * _smooth_field(size, int(rng.integers(2, 9)), rng)
    texture = 1.0 + 0.03 * torch.from_numpy(rng.standard_normal(size).astype(np.float32))
    snow = torch.from_numpy(snow_spectrum(bands, rng)).view(-1, 1, 1) * (shade * texture)
    return x * (1.0 - alpha) + alpha * snow, y
