"""Arguments of ``scannernet demo``, importable without rclpy."""
from __future__ import annotations

import argparse

from ..zoo import DEFAULT_MODEL


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default="synthetic", help="'synthetic', a 38-Cloud patch/scene, L8 Biome patch or image file")
    p.add_argument("--model", default=DEFAULT_MODEL, help="registry name (shipped weights) or .safetensors path")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--width", type=int, default=384, help="synthetic scene width")
    p.add_argument("--length", type=int, default=1000, help="synthetic scene length in lines")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--encoding", default="16UC4")
    p.add_argument("--line-rate", type=float, default=225.0, help="lines per second (0 = as fast as possible)")
    p.add_argument("--out", default="out")
    p.add_argument("--diagnostics-wait", type=float, default=1.1, help=argparse.SUPPRESS)
