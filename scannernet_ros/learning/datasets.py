"""Training and evaluation data as in-memory samples, whatever the source.

A source string is one of: ``synthetic:N[:SIZE[:LO-HI]]`` (N procedural scenes of SIZE x SIZE,
cloud cover spread from LO to HI; the default 0.15-0.65 has no clear or overcast scenes, 0-1.6 has both;
``synthetic:N:SIZE:LO-HI:A`` labels cloud from opacity A instead of 0.5, as datasets that count thin cloud do),
a 38-Cloud split folder (its patches), an L8 Biome folder (``Images/`` + ``Masks/`` anywhere
below), a rosbag2 bag or a folder of bags (one scene per bag), a folder of images each with a
``<stem>_mask`` beside it, or one image file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..scenes import BANDS, ArrayScene, DatasetError
from ..scenes.biome import biome_patches, read_biome
from ..scenes.cloud38 import find_split, is_cloud38, parse_patch_name, read_patch
from ..scenes.synthetic import SyntheticScene


IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".npy")


@dataclass
class Sample:
    name: str
    scene: str                 # patches of one scene share it: the unit of the validation split
    reflectance: np.ndarray    # (4 or 5, H, W) float32: R, G, B, NIR and, where the source has it, SWIR1
    mask: np.ndarray           # (H, W) uint8: 0, 1, 255 no data
    thin: np.ndarray | None = None  # (H, W) bool thin cloud, where the truth tells thin from thick


def _synthetic(spec: str) -> list[Sample]:
    parts = spec.split(":")
    count = int(parts[1]) if len(parts) > 1 else 16
    size = int(parts[2]) if len(parts) > 2 else 256
    try:
        low, high = (float(v) for v in parts[3].split("-")) if len(parts) > 3 else (0.15, 0.65)
        cloud_at = float(parts[4]) if len(parts) > 4 else 0.5
    except ValueError:
        raise DatasetError(f"{spec}: expected synthetic:N:SIZE:LO-HI[:OPACITY], e.g. synthetic:24:256:0-1.6:0.2") from None
    out = []
    for seed in range(1000, 1000 + count):
        cover = low + (high - low) * ((seed * 7919) % 100) / 100
        scene = SyntheticScene(size, size, seed=seed, cloud_cover=cover, cloud_at=cloud_at)
        rho, mask = scene.rows(0, size)
        out.append(Sample(scene.name, scene.name, rho, mask))
    return out


def _cloud38(path: Path, nonempty_only: bool) -> list[Sample]:
    split = find_split(path)
    out = []
    for name in split.patch_names(nonempty_only):
        rho, mask = read_patch(split, name)
        if mask is None:
            raise DatasetError(f"{split.gt_path(name)}: missing ground truth for training/evaluation")
        out.append(Sample(name, parse_patch_name(name).scene, rho, mask))
    return out


def _from_scene(scene: ArrayScene, scene_id: str | None = None) -> Sample:
    if scene.mask is None:
        raise DatasetError(f"{scene.name}: no ground truth")
    return Sample(scene.name, scene_id or scene.name, scene.reflectance, scene.mask, scene.thin)


def load_samples(source: str, nonempty_only: bool = False) -> list[Sample]:
    if source.startswith("synthetic"):
        return _synthetic(source)
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(f"{source}: no such file or folder")
    if is_cloud38(path):
        return _cloud38(path, nonempty_only)
    from ..bags import find_bags, read_bag_scene
    bags = find_bags(path)
    partial = sorted(p.name for p in path.iterdir() if p.name.endswith(".partial")) if path.is_dir() else []
    if partial:
        raise DatasetError(f"{source}: holds {len(partial)} half-written bag(s) of an interrupted conversion "
                           f"({partial[0]}); complete it with `scannernet convert ... --clean-partial` first")
    if bags:
        return [_from_scene(read_bag_scene(b)) for b in bags]
    patches = biome_patches(path) if path.is_dir() else []
    if patches:
        # L8 Biome ids are <Biome>_<scene>_<patch>: the scene is the first two parts.
        return [_from_scene(read_biome(p), "_".join(p.stem.split("_")[:2])) for p in patches]
    from ..scenes import open_scene
    if path.is_file():
        return [_from_scene(open_scene(str(path)))]
    images = [p for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES
              and not p.stem.endswith("_mask") and not p.name.endswith(".mask.npy")]
    if images:  # a plain folder of images, each with its <stem>_mask beside it
        return [_from_scene(open_scene(str(p))) for p in images]
    raise DatasetError(f"{source}: not a 38-Cloud split, bag, L8 Biome folder, image folder or image file")


def load_all(sources: list[str], nonempty_only: bool = False) -> list[Sample]:
    samples = []
    for source in sources:
        samples += load_samples(source, nonempty_only)
    return samples


def band_index(samples: list[Sample], bands: tuple[str, ...]) -> list[int]:
    """Rows of every sample's reflectance that hold ``bands``; a sample without one of them (SWIR1
    from 38-Cloud or the synthetic scenes) is an error that names it, never a filled-in band."""
    index = [BANDS.index(b) for b in bands]
    lacking = [s.name for s in samples if s.reflectance.shape[0] <= max(index)]
    if lacking:
        raise DatasetError(f"{len(lacking)} sample(s) have no {BANDS[max(index)]} band, which --bands "
                           f"{','.join(bands)} needs (first: {', '.join(lacking[:3])}); only L8 Biome patches carry SWIR1")
    return index


def fingerprint(samples: list[Sample]) -> str:
    """SHA-256 over the scene ids, names, pixels and labels of ``samples``: what ``cv --reuse`` and
    ``ship`` compare, so that replaced data cannot pass for the data weights were trained on."""
    import hashlib
    h = hashlib.sha256()
    for sample in sorted(samples, key=lambda x: (x.scene, x.name)):
        h.update(f"{sample.scene}/{sample.name}".encode())
        h.update(np.ascontiguousarray(sample.reflectance, np.float32).tobytes())
        h.update(np.ascontiguousarray(sample.mask, np.uint8).tobytes())
    return h.hexdigest()


def split_by_scene(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out about ``fraction`` of the samples, whole scenes at a time when there are several."""
    scenes = sorted({s.scene for s in samples})
    rng = np.random.default_rng(seed)
    if len(scenes) > 1:
        rng.shuffle(scenes)
        held, count = set(), 0
        for scene in scenes:
            if count >= fraction * len(samples) or len(held) == len(scenes) - 1:
                break
            held.add(scene)
            count += sum(s.scene == scene for s in samples)
        return [s for s in samples if s.scene not in held], [s for s in samples if s.scene in held]
    order = rng.permutation(len(samples))
    n_val = max(1, round(fraction * len(samples))) if len(samples) > 1 else 0
    val = {int(i) for i in order[:n_val]}
    return [s for i, s in enumerate(samples) if i not in val], [s for i, s in enumerate(samples) if i in val]
