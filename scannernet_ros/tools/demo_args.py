"""Arguments of ``scannernet demo``, importable without rclpy."""
from __future__ import annotations

import argparse

from ..zoo import DEFAULT_MODEL


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default="demo",
                   help="'demo' (a real Landsat 8 patch shipped with the package), 'synthetic', a 38-Cloud "
                        "patch/scene, an L8 Biome patch or an image file")
    p.add_argument("--model", default=DEFAULT_MODEL, help="registry name (shipped weights) or .safetensors path")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--width", type=int, default=384, help="synthetic scene width in pixels")
    p.add_argument("--length", type=int, default=1000, help="synthetic scene length in lines")
    p.add_argument("--seed", type=int, default=0, help="synthetic scene seed")
    p.add_argument("--encoding", default="16UC4", help="scanline encoding the camera publishes")
    p.add_argument("--line-rate", type=float, default=225.0, help="lines per second (0 = as fast as possible)")
    p.add_argument("--out", default="out", help="folder for demo.png")
    p.add_argument("--diagnostics-wait", type=float, default=1.1, help=argparse.SUPPRESS)
