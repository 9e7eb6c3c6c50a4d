"""38-Cloud (Mohajerani & Saeedi) in its official layout: patches, patch lists, whole scenes.

Patches are 384x384 uint16 Landsat 8 digital numbers per band in ``train_{red,green,blue,nir}``
(``test_*`` for the test split) with ``train_gt`` masks {0, 255}.  A patch name
``patch_<n>_<row>_by_<col>_<scene>`` places it at ((row-1)*384, (col-1)*384) of its scene.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..normalise import InputSpec, to_reflectance
from . import NO_DATA, ArrayScene, DatasetError, read_tiff

PATCH = 384
BAND_DIRS = ("red", "green", "blue", "nir")
_NAME = re.compile(r"^patch_(\d+)_(\d+)_by_(\d+)_(.+)$")


@dataclass(frozen=True)
class PatchName:
    number: int
    row: int
    col: int
    scene: str

    @property
    def name(self) -> str:
        return f"patch_{self.number}_{self.row}_by_{self.col}_{self.scene}"


def parse_patch_name(name: str) -> PatchName:
    """Accepts ``patch_...`` or a band file's stem such as ``red_patch_...``."""
    stem = Path(name).stem
    stem = stem[stem.index("patch_"):] if "patch_" in stem else stem
    m = _NAME.match(stem)
    if not m:
        raise DatasetError(f"{name!r} is not a 38-Cloud patch name (patch_<n>_<row>_by_<col>_<scene>)")
    return PatchName(int(m[1]), int(m[2]), int(m[3]), m[4])


@dataclass(frozen=True)
class Split:
    """One split folder: ``38-Cloud_training`` (prefix ``train``) or ``38-Cloud_test`` (``test``)."""

    root: Path
    prefix: str

    def band_path(self, band: str, patch: str) -> Path:
        return self.root / f"{self.prefix}_{band}" / f"{band}_{patch}.TIF"

    def gt_path(self, patch: str) -> Path:
        return self.root / f"{self.prefix}_gt" / f"gt_{patch}.TIF"

    def scene_gt_path(self, scene: str) -> Path:
        """``Entire_scene_gts/edited_corrected_gts_<scene>.TIF`` beside the split folder."""
        return self.root.parent / "Entire_scene_gts" / f"edited_corrected_gts_{scene}.TIF"

    def patch_names(self, nonempty_only: bool = False) -> list[str]:
        """From the official CSV when present, else from the red band folder."""
        pattern = "*nonempty*.csv" if nonempty_only else f"{self.prefix}*_patches_38-[Cc]loud.csv"
        lists = sorted(self.root.glob(pattern))
        if lists:
            with open(lists[0], newline="") as f:
                return [row["name"].strip() for row in csv.DictReader(f) if row.get("name")]
        red = self.root / f"{self.prefix}_red"
        if not red.is_dir():
            raise DatasetError(f"{red}: missing band folder")
        return sorted(p.stem[len("red_"):] for p in red.glob("red_*.TIF"))


def find_split(path: Path) -> Split:
    """Accept the dataset root, a split folder, or any file inside a split folder."""
    path = Path(path)
    for candidate in (path, *path.parents):
        for prefix, folder in (("train", "38-Cloud_training"), ("test", "38-Cloud_test")):
            if candidate.name == folder:
                return Split(candidate, prefix)
            if (candidate / folder).is_dir():
                return Split(candidate / folder, prefix)
    raise DatasetError(f"{path}: no 38-Cloud_training or 38-Cloud_test folder here")


def is_cloud38(path: Path) -> bool:
    try:
        find_split(path)
        return True
    except DatasetError:
        return False


def _read_tif(path: Path, dtype) -> np.ndarray:
    image = read_tiff(path)
    if image.ndim != 2:
        raise DatasetError(f"{path}: expected one band, got shape {image.shape}")
    return image.astype(dtype, copy=False)


def read_patch(split: Split, patch: str, spec: InputSpec | None = None,
               with_truth: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """One patch -> reflectance (4, H, W) float32 in R, G, B, NIR order and mask (H, W) {0, 1}.

    Pixels with DN 0 in every band are the scene's no-data border: their mask is NO_DATA.
    """
    spec = spec or InputSpec()
    dn = [_read_tif(split.band_path(b, patch), np.uint16) for b in BAND_DIRS]
    for band, image in zip(BAND_DIRS[1:], dn[1:]):
        if image.shape != dn[0].shape:
            raise DatasetError(f"{split.band_path(band, patch)}: shape {image.shape} differs from red's {dn[0].shape}")
    dn = np.stack(dn)
    mask = None
    if with_truth and split.gt_path(patch).is_file():
        gt = _read_tif(split.gt_path(patch), np.uint8)
        if gt.shape != dn.shape[1:]:
            raise DatasetError(f"{split.gt_path(patch)}: shape {gt.shape} differs from the bands' {dn.shape[1:]}")
        mask = (gt > 0).astype(np.uint8)
    elif with_truth and split.scene_gt_path(parse_patch_name(patch).scene).is_file():
        mask = _window_of_scene_truth(split, parse_patch_name(patch), dn.shape[1:])
    if mask is not None:
        mask[(dn == 0).all(axis=0)] = NO_DATA
    return to_reflectance(dn, "uint16", spec), mask


@lru_cache(maxsize=2)
def _scene_truth(path: Path) -> np.ndarray:
    return (read_tiff(path) > 0).astype(np.uint8)


def _window_of_scene_truth(split: Split, p: PatchName, shape: tuple[int, int]) -> np.ndarray:
    """A test patch's part of its scene mask; where the scene mask ends, no data."""
    truth = _scene_truth(split.scene_gt_path(p.scene))
    r0, c0 = (p.row - 1) * PATCH, (p.col - 1) * PATCH
    window = truth[r0:r0 + shape[0], c0:c0 + shape[1]]
    mask = np.full(shape, NO_DATA, np.uint8)
    mask[:window.shape[0], :window.shape[1]] = window
    return mask


def rebuild_scene(split: Split, scene: str, patches: list[str] | None = None) -> ArrayScene:
    """Stitch every patch of ``scene`` at its (row, column); places with no patch are no data."""
    names = [parse_patch_name(p) for p in (patches or split.patch_names())]
    names = [p for p in names if p.scene == scene]
    if not names:
        raise DatasetError(f"{split.root}: no patches of scene {scene!r}")
    rows, cols = max(p.row for p in names), max(p.col for p in names)
    rho = np.full((4, rows * PATCH, cols * PATCH), -0.1, np.float32)
    mask = np.full((rows * PATCH, cols * PATCH), NO_DATA, np.uint8)
    for p in names:
        x, m = read_patch(split, p.name)
        r0, c0 = (p.row - 1) * PATCH, (p.col - 1) * PATCH
        rho[:, r0:r0 + x.shape[1], c0:c0 + x.shape[2]] = x
        if m is not None:
            mask[r0:r0 + x.shape[1], c0:c0 + x.shape[2]] = m
    scene_gt = split.scene_gt_path(scene)
    if scene_gt.is_file():  # the test split: one ground truth per scene, aligned at the top left
        gt = read_tiff(scene_gt)
        h, w = min(gt.shape[0], mask.shape[0]), min(gt.shape[1], mask.shape[1])
        mask[:] = NO_DATA
        mask[:h, :w] = gt[:h, :w] > 0
        mask[(rho <= -0.1 + 1e-6).all(axis=0)] = NO_DATA  # DN 0 in every band: outside the image
    return ArrayScene(scene, rho, mask)


def open_cloud38(path: Path) -> ArrayScene:
    """A patch file, or a scene id after the split folder: ``.../38-Cloud_training/<scene>``."""
    split = find_split(path)
    path = Path(path)
    if path.is_file():
        patch = parse_patch_name(path.stem)
        rho, mask = read_patch(split, patch.name)
        return ArrayScene(patch.name, rho, mask)
    if path.resolve() == split.root.resolve() or path.resolve() == split.root.parent.resolve():
        first = parse_patch_name(split.patch_names()[0])
        return rebuild_scene(split, first.scene)
    return rebuild_scene(split, path.name)


def scene_ids(split: Split) -> list[str]:
    return sorted({parse_patch_name(p).scene for p in split.patch_names()})
