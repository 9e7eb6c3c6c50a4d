"""The push-broom camera simulator's core: a scene read line by line, encoded as the sensor would.

Stamps follow the acquisition schedule ``t0 + i / line_rate`` exactly, so a consumer can tell a
lost line from timer jitter by looking at the stamps alone.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .codec import bands_of, check_width, kind_of
from .normalise import InputSpec, from_reflectance
from .scenes import BANDS, NO_DATA, Scene

LANDSAT8_LINE_RATE_HZ = 225.0  # about 4.4 ms per 30 m line of the OLI push-broom sensor

# Rows synthesised or read per call.  A paced camera reads a block in the slack between two lines,
# so a block must take less than one line period (4.4 ms): 64 synthetic rows at 384 px took 7 ms
# here and made every 64th line late; 16 take under 3 ms.  Unpaced, nothing is late and larger
# blocks cost less per row (0.12 ms at 64 rows against 0.17 ms at 16).
BLOCK = 16
UNPACED_BLOCK = 64


@dataclass
class ScanLine:
    index: int          # line number since the start (keeps counting across loops)
    samples: np.ndarray  # (bands, width) in the encoding's band order and sample type
    truth: np.ndarray | None  # (width,) 0/1/NO_DATA


def encode_rows(reflectance: np.ndarray, encoding: str, spec: InputSpec = InputSpec()) -> np.ndarray:
    """``(bands, rows, width)`` reflectance (the first of R, G, B, NIR, SWIR1) -> the encoding's
    bands and sample type.

    ``mono`` is the mean of R, G, B; ``alpha`` (8-bit encodings only) is opaque.  An encoding with a
    band the scene lacks (SWIR1 from a 38-Cloud scene) is refused rather than filled in.
    """
    missing = [b for b in bands_of(encoding) if b in BANDS and BANDS.index(b) >= reflectance.shape[0]]
    if missing:
        raise ValueError(f"encoding {encoding} carries {', '.join(missing)}, which the scene does not have "
                         f"(it has {', '.join(BANDS[:reflectance.shape[0]])})")
    kind = kind_of(encoding)
    planes = []
    for band in bands_of(encoding):
        if band == "alpha":
            planes.append(None)
            continue
        plane = reflectance[:3].mean(axis=0) if band == "mono" else reflectance[BANDS.index(band)]
        planes.append(from_reflectance(plane, kind, spec))
    return np.stack([np.full_like(planes[0], 255) if p is None else p for p in planes])


def scan(scene: Scene, encoding: str, loop: bool = False, block: int = BLOCK) -> Iterator[ScanLine]:
    """Yield the scene's lines in order, forever when ``loop``, reading ``block`` rows at a time.

    A scene wider than the package's width limit, or without a band the encoding carries, is
    refused here, before the first line."""
    check_width(scene.width, f"scene {scene.name}")
    if scene.length:
        encode_rows(scene.rows(0, 1)[0], encoding)
    return _scan(scene, encoding, loop, block)


def _scan(scene: Scene, encoding: str, loop: bool, block: int) -> Iterator[ScanLine]:
    index = 0
    while True:
        for start in range(0, scene.length, block):
            rho, mask = scene.rows(start, min(start + block, scene.length))
            encoded = encode_rows(rho, encoding)
            for r in range(encoded.shape[1]):
                yield ScanLine(index, encoded[:, r], None if mask is None else mask[r])
                index += 1
        if not loop:
            return


def truth_mono8(truth: np.ndarray) -> np.ndarray:
    """0/1 (NO_DATA kept) -> mono8 0/255; no-data pixels are published as 127."""
    out = np.where(truth == 1, 255, 0).astype(np.uint8)
    out[truth == NO_DATA] = 127
    return out


def truth_from_mono8(gt: np.ndarray) -> np.ndarray:
    """The inverse of :func:`truth_mono8`: gt_line mono8 (0, 255, 127) -> 0/1/NO_DATA."""
    out = (gt == 255).astype(np.uint8)
    out[gt == 127] = NO_DATA
    return out
