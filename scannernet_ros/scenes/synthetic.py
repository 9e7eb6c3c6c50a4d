"""Procedural push-broom scenes: terrain and clouds with an exact cloud mask, any size, seeded.

Every pixel is a pure function of (seed, row, column), so a block of rows can be produced on its
own: a 100,000-line scene costs no more memory than one block, and two readers of the same scene
(the camera and the test that checks its output) see the same values.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Reflectance (R, G, B, NIR) of the surface classes, roughly Landsat 8 top-of-atmosphere values.
WATER = np.array([0.05, 0.07, 0.09, 0.03], np.float32)
VEGETATION = np.array([0.06, 0.10, 0.07, 0.35], np.float32)
SOIL = np.array([0.25, 0.22, 0.18, 0.32], np.float32)
SNOW = np.array([0.80, 0.82, 0.85, 0.65], np.float32)
CLOUD = np.array([0.78, 0.78, 0.80, 0.72], np.float32)


def _hash(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Integer lattice -> uniform [0, 1); a small avalanche hash, reproducible across platforms."""
    h = (ix.astype(np.uint64) * np.uint64(0x9E3779B1) + iy.astype(np.uint64) * np.uint64(0x85EBCA77)
         + np.uint64(seed) * np.uint64(0xC2B2AE3D)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(0x2C1B3C6D)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(12)
    h = (h * np.uint64(0x297A2D39)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(15)
    return (h & np.uint64(0xFFFFFF)).astype(np.float32) / np.float32(1 << 24)


def value_noise(rows: np.ndarray, cols: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Smooth noise in [0, 1) on the grid rows x cols, with features about ``scale`` pixels wide.

    Only the lattice points covering the block are hashed; pixels interpolate between them.
    """
    y, x = rows / scale, cols / scale
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    ty, tx = (y - y0).astype(np.float32), (x - x0).astype(np.float32)
    ty, tx = ty * ty * (3 - 2 * ty), tx * tx * (3 - 2 * tx)
    ly = np.arange(y0.min(), y0.max() + 2)
    lx = np.arange(x0.min(), x0.max() + 2)
    lattice = _hash(lx[None, :] + (1 << 20), ly[:, None] + (1 << 20), seed)
    iy, ix = y0 - ly[0], x0 - lx[0]
    top = lattice[iy][:, ix] + (lattice[iy][:, ix + 1] - lattice[iy][:, ix]) * tx
    bottom = lattice[iy + 1][:, ix] + (lattice[iy + 1][:, ix + 1] - lattice[iy + 1][:, ix]) * tx
    return top + (bottom - top) * ty[:, None]


def fbm(rows: np.ndarray, cols: np.ndarray, scale: float, seed: int, octaves: int = 4) -> np.ndarray:
    """Fractal sum of value noise, normalised to about [0, 1)."""
    total = np.zeros((len(rows), len(cols)), np.float32)
    amplitude, norm = 1.0, 0.0
    for o in range(octaves):
        total += amplitude * value_noise(rows, cols, scale / 2 ** o, seed * 101 + o)
        norm += amplitude
        amplitude *= 0.5
    return total / norm


@dataclass
class SyntheticScene:
    """Terrain (water, vegetation, soil, some snow) under a cloud field; mask = cloud opacity > 0.5."""

    width: int = 384
    length: int = 1000
    seed: int = 0
    cloud_cover: float = 0.35   # rough fraction of cloudy pixels
    noise: float = 0.005        # sensor noise, reflectance units
    cloud_at: float = 0.5       # opacity from which a pixel is labelled cloud (lower: thin cloud counts too)
    has_truth: bool = True

    def __post_init__(self) -> None:
        if self.width < 1 or self.length < 1:
            raise ValueError(f"synthetic scene needs width and length >= 1, got {self.width}x{self.length}")

    @property
    def name(self) -> str:
        return f"synthetic_seed{self.seed}_{self.width}x{self.length}"

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        stop = min(stop, self.length)
        r = np.arange(start, stop, dtype=np.float64)
        c = np.arange(self.width, dtype=np.float64)
        s = self.seed
        land = fbm(r, c, 160.0, s)
        moisture = fbm(r, c, 60.0, s + 1)
        surface = np.where((moisture > 0.5)[..., None], VEGETATION, SOIL)
        surface = np.where((land < 0.38)[..., None], WATER, surface)
        surface = np.where((land > 0.78)[..., None], SNOW, surface)
        texture = 0.85 + 0.3 * fbm(r, c, 12.0, s + 2, octaves=3)
        ground = surface * texture[..., None]

        density = fbm(r, c, 90.0, s + 3, octaves=5)
        threshold = 0.62 - 0.35 * (self.cloud_cover - 0.35)
        opacity = np.clip((density - threshold) / 0.08 + 0.5, 0.0, 1.0)
        bright = CLOUD * (0.9 + 0.2 * fbm(r, c, 20.0, s + 4, octaves=3))[..., None]
        rho = ground * (1 - opacity[..., None]) + bright * opacity[..., None]
        for band in range(rho.shape[-1]):  # uniform noise with std `noise`, hashed per pixel
            u = _hash(c[None, :].astype(np.int64), r[:, None].astype(np.int64), s * 13 + 7 + band)
            rho[..., band] += (u - 0.5) * (self.noise * 12 ** 0.5)
        mask = (opacity > self.cloud_at).astype(np.uint8)
        return np.ascontiguousarray(rho.transpose(2, 0, 1), np.float32), mask
