"""Pictures for people: display RGB, cloud overlays, side-by-side panels.  No ROS, no matplotlib."""
from __future__ import annotations

from pathlib import Path

import numpy as np

CLOUD_TINT = np.array([255, 0, 255], np.float32)  # magenta: visible on every land cover and on cloud


def display_rgb(reflectance: np.ndarray, gain: float = 2.5) -> np.ndarray:
    """R, G, B reflectance ``(3, ...)`` -> uint8 ``(..., 3)`` with a fixed, scene-independent stretch."""
    rgb = np.moveaxis(np.asarray(reflectance[:3], np.float32), 0, -1)
    return (np.clip(rgb * gain, 0.0, 1.0) ** (1 / 1.6) * 255).astype(np.uint8)


def overlay(rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Tint cloud pixels of a uint8 RGB image (any leading shape) in magenta."""
    out = rgb.astype(np.float32)
    m = np.asarray(mask, bool)
    out[m] = (1 - alpha) * out[m] + alpha * CLOUD_TINT
    return out.astype(np.uint8)


def mask_rgb(mask: np.ndarray) -> np.ndarray:
    """0/1 mask (255 = no data, shown grey) -> uint8 RGB."""
    grey = np.where(mask == 1, 255, 0).astype(np.uint8)
    grey[mask == 255] = 96
    return np.repeat(grey[..., None], 3, axis=-1)


def save_panels(path: Path, panels: list[np.ndarray], gap: int = 4) -> Path:
    """Save uint8 RGB images of equal height side by side with white gaps between them."""
    from PIL import Image
    h = panels[0].shape[0]
    spacer = np.full((h, gap, 3), 255, np.uint8)
    row = []
    for p in panels:
        row += [p, spacer]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(row[:-1], axis=1)).save(path)
    return path
