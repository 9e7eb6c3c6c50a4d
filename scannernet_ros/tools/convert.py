"""Datasets to rosbag2: one bag per scene, each in its own stretch of time.

Bags are stamped on the Landsat 8 line schedule; bag k starts 1,000 s after bag k-1, so that lines
of different scenes never share a stamp when several bags are replayed into one evaluator.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ..bags import BagError, write_scene_bag
from ..learning.datasets import load_samples
from ..scenes import ArrayScene
from ..scenes.cloud38 import find_split, is_cloud38, rebuild_scene, scene_ids

START_NS = 1_700_000_000_000_000_000
SPACING_NS = 1_000 * 1_000_000_000


def scenes_of(source: str, per_patch: bool):
    """38-Cloud scenes are rebuilt from their patches (test scenes take their masks from
    ``Entire_scene_gts``); everything else is one scene per sample."""
    path = Path(source)
    if not source.startswith("synthetic") and is_cloud38(path) and not per_patch:
        split = find_split(path)
        for scene in scene_ids(split):
            yield rebuild_scene(split, scene)
        return
    for s in load_samples(source):
        yield ArrayScene(s.name, s.reflectance, s.mask)


def convert(source: str, out: str, encoding: str = "16UC4", storage: str = "mcap", per_patch: bool = False,
            clean_partial: bool = False) -> list[Path]:
    """Write one bag per scene into ``out``.  With ``clean_partial``, an interrupted conversion is
    completed: its half-written bags are removed, its complete ones (a bag appears only once it is
    whole) are kept, and the scenes still missing are written."""
    out_dir = Path(out)
    keep: set[str] = set()
    if out_dir.exists():
        stale = [p for p in out_dir.iterdir() if p.name.startswith(".") and p.name.endswith(".partial")]
        if clean_partial:
            for p in stale:
                shutil.rmtree(p)
            keep = {p.name for p in out_dir.iterdir()}
        elif stale:
            raise BagError(f"{out_dir}: holds {len(stale)} interrupted conversion(s) ({stale[0].name}); "
                           "run again with --clean-partial to complete it")
        elif any(out_dir.iterdir()):
            raise BagError(f"{out_dir}: exists and is not empty; refusing to overwrite")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for k, scene in enumerate(scenes_of(source, per_patch)):
        bag = out_dir / scene.name
        if scene.name in keep:
            keep.discard(scene.name)
            print(f"  {bag}: kept (complete from the interrupted run)", file=sys.stderr)
            written.append(bag)
            continue

        def progress(done: int, total: int, name=scene.name) -> None:
            print(f"\r  {name}: {done}/{total} lines", end="", file=sys.stderr, flush=True)
        write_scene_bag(bag, scene, encoding, storage, start_ns=START_NS + k * SPACING_NS, progress=progress)
        print(f"\r  {bag}: {scene.length} lines x {scene.width} px", file=sys.stderr)
        written.append(bag)
    if not written:
        raise BagError(f"{source}: nothing to convert")
    if keep:
        raise BagError(f"{out_dir}: holds {len(keep)} entries that are no scene of {source} "
                       f"({sorted(keep)[0]}, ...): not the same conversion")
    return written
