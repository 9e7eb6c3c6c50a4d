"""L8 Biome patches: float32 (H, W, 8) reflectance with Biome mask codes.

Band order in the images is blue, green, red, NIR, SWIR1, SWIR2, cirrus, thermal; masks use
0 no data, 64 shadow, 128 clear, 192 thin cloud, 255 cloud.  Thin and thick cloud count as cloud.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import NO_DATA, ArrayScene, DatasetError, read_tiff

BAND_INDEX = [2, 1, 0, 3, 4]   # R, G, B, NIR, SWIR1 (scenes.BANDS) in the image's band order


def is_biome_image(path: Path) -> bool:
    path = Path(path)
    return path.is_file() and path.parent.name == "Images" and (path.parent.parent / "Masks").is_dir()


def biome_mask(codes: np.ndarray) -> np.ndarray:
    mask = (codes >= 192).astype(np.uint8)
    mask[codes == 0] = NO_DATA
    return mask


def read_biome(path: Path) -> ArrayScene:
    path = Path(path)
    mask_path = path.parent.parent / "Masks" / path.name
    image, codes = read_tiff(path), read_tiff(mask_path)
    if image.ndim != 3 or image.shape[2] < 5:
        raise DatasetError(f"{path}: expected (H, W, 8) reflectance, got {image.shape}")
    if codes.shape != image.shape[:2]:
        raise DatasetError(f"{mask_path}: shape {codes.shape} differs from the image's {image.shape[:2]}")
    rho = np.ascontiguousarray(image[..., BAND_INDEX].transpose(2, 0, 1), np.float32)
    return ArrayScene(path.stem, rho, biome_mask(codes), thin=codes == 192)


def biome_patches(root: Path) -> list[Path]:
    """Every ``Images/*.tif`` under ``root`` (for example the train/ and val/ folders)."""
    return sorted(Path(root).rglob("Images/*.tif"))
