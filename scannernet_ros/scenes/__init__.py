"""Scene sources: where the push-broom camera, the converter and the trainer get their images.

A scene is read in blocks of rows as top-of-atmosphere reflectance ``(bands, rows, width)``: the
first 4 or 5 of :data:`BANDS` (R, G, B, NIR, and SWIR1 where the source has it), with a cloud mask
``(rows, width)`` (1 cloud, 0 clear, 255 no data) when ground truth exists.  Reading in blocks
keeps memory flat for arbitrarily long scenes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..normalise import BAND_NAMES

# Every source has the first four; L8 Biome patches also SWIR1 (1.6 um), which tells snow, ice and
# bright soil (dark there) from cloud (bright).  Indices into a scene's reflectance are these.
BANDS = BAND_NAMES
NO_DATA = 255


class DatasetError(RuntimeError):
    """A dataset file that is missing, unreadable or inconsistent; the message names it."""


def read_tiff(path: Path) -> np.ndarray:
    """tifffile, with every way a file can be missing or broken turned into a DatasetError.

    tifffile logs rather than raises for some corrupt files and returns no pixels; that counts
    as unreadable too.
    """
    import logging

    import tifffile
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: missing file")
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    try:
        image = tifffile.imread(path)
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types for a broken file
        raise DatasetError(f"{path}: unreadable TIFF ({exc})") from None
    if image.size == 0:
        raise DatasetError(f"{path}: unreadable TIFF (no pixel data)")
    return image


class Scene(Protocol):
    name: str
    width: int
    length: int
    has_truth: bool

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]: ...


@dataclass
class ArrayScene:
    """A scene already in memory (a patch, a rebuilt 38-Cloud scene, an image file)."""

    name: str
    reflectance: np.ndarray          # (4 or 5, rows, width) float32: the first of BANDS
    mask: np.ndarray | None = None   # (rows, width) uint8: 0, 1 or NO_DATA
    thin: np.ndarray | None = None   # (rows, width) bool: cloud the truth calls thin, where it says so

    @property
    def width(self) -> int:
        return self.reflectance.shape[2]

    @property
    def length(self) -> int:
        return self.reflectance.shape[1]

    @property
    def bands(self) -> tuple[str, ...]:
        return BANDS[:self.reflectance.shape[0]]

    @property
    def has_truth(self) -> bool:
        return self.mask is not None

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        mask = None if self.mask is None else self.mask[start:stop]
        return self.reflectance[:, start:stop], mask


DEMO_SCENE = Path(__file__).resolve().parent / "demo" / "l8_grasscrops_02_0608.npy"


def open_scene(source: str, width: int = 384, length: int = 1000, seed: int = 0) -> Scene:
    """``synthetic``, ``demo`` (the real Landsat 8 patch shipped in scenes/demo/) or a path: a
    38-Cloud patch/scene, an L8 Biome patch, or an image file."""
    from .synthetic import SyntheticScene
    if source in ("", "synthetic"):
        return SyntheticScene(width=width, length=length, seed=seed)
    path = DEMO_SCENE if source == "demo" else Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"scene source {source!r}: no such file or folder")
    if not (path.is_file() or path.is_dir()):
        raise ValueError(f"scene source {source!r}: not a regular file or folder (a pipe or device cannot be re-read)")
    from .cloud38 import is_cloud38, open_cloud38
    if is_cloud38(path):
        return open_cloud38(path)
    from .biome import is_biome_image, read_biome
    if is_biome_image(path):
        return read_biome(path)
    from .files import read_image_file
    return read_image_file(path)
