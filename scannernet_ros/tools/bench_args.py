"""Arguments of ``scannernet bench`` (kept apart so ``scannernet --help`` stays light)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=500, help="repetitions per latency test (first 10 discarded)")
    p.add_argument("--swath-lines", type=int, default=500, help="lines timed at full swath")
    p.add_argument("--ros-lines", type=int, default=2000, help="lines per end-to-end ROS 2 run")
    p.add_argument("--long-lines", type=int, default=100_000, help="scene length for the RSS-over-length run")
    p.add_argument("--parts", default="memory,latency,step,swath,ros",
                   help="comma-separated subset of: memory, latency, step, swath, ros, predict (llvm-mca's "
                        "predicted rate on Cortex-A57/A72/A78; needs gcc-aarch64-linux-gnu and llvm-19)")
    p.add_argument("--out", default="out/bench", help="folder for bench*.md and bench*.json")
