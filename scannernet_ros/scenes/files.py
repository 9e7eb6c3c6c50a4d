"""A plain multi-band image file (TIFF, PNG, .npy) as a scene, with an optional mask beside it.

uint8 images are read as reflectance * 255, uint16 as Landsat 8 digital numbers, floats as
reflectance.  Three bands are R, G, B; a fourth is NIR (filled with red when absent).  A mask
``<stem>_mask.<ext>`` or ``<stem>.mask.npy`` next to the image, if present, is the ground truth
(non-zero = cloud).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..normalise import InputSpec, to_reflectance
from . import NO_DATA, ArrayScene, DatasetError, read_tiff


def _load(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        return read_tiff(path)
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        from PIL import Image
        return np.asarray(Image.open(path))
    except Exception as exc:  # noqa: BLE001 - every reader raises its own types
        raise DatasetError(f"{path}: unreadable image ({exc})") from None


def _channels_first(image: np.ndarray, path: Path) -> np.ndarray:
    if image.ndim == 2:
        raise DatasetError(f"{path}: single-band image; ScannerNet needs at least R, G, B")
    if image.ndim != 3:
        raise DatasetError(f"{path}: expected a 3-D image, got shape {image.shape}")
    if image.shape[0] in (3, 4) and image.shape[2] not in (3, 4):
        return image
    return image.transpose(2, 0, 1)


def read_image_file(path: Path, spec: InputSpec | None = None) -> ArrayScene:
    path = Path(path)
    raw = _channels_first(_load(path), path)
    if raw.shape[0] < 3:
        raise DatasetError(f"{path}: {raw.shape[0]} bands; need R, G, B (and optionally NIR)")
    kind = {"u1": "uint8", "u2": "uint16"}.get(raw.dtype.kind + str(raw.dtype.itemsize), "float")
    rho = to_reflectance(raw[:4], kind, spec or InputSpec())
    if rho.shape[0] == 3:
        rho = np.concatenate([rho, rho[:1]])
    mask = None
    for candidate in (path.with_name(f"{path.stem}_mask{path.suffix}"), path.with_name(f"{path.stem}.mask.npy")):
        if candidate.is_file():
            m = _load(candidate)
            m = m if m.ndim == 2 else m[..., 0]
            if m.shape != rho.shape[1:]:
                raise DatasetError(f"{candidate}: mask shape {m.shape} differs from the image's {rho.shape[1:]}")
            mask = mask_codes(m)
            break
    return ArrayScene(path.stem, np.ascontiguousarray(rho, np.float32), mask)


def mask_codes(m: np.ndarray) -> np.ndarray:
    """A mask file's values as 0 clear, 1 cloud, NO_DATA.

    A mask holding only 0, 1 and 255 marks no data with 255 (the package's own convention); any
    other mask is read as clear (0) against cloud (anything else), as common 0/255 masks are."""
    values = np.unique(m)
    if set(values.tolist()) <= {0, 1, NO_DATA} and 1 in values:
        return m.astype(np.uint8)
    return (m > 0).astype(np.uint8)
