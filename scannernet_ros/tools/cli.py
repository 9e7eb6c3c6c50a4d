"""The ``scannernet`` command: one entry point for the offline jobs; ROS nodes stay separate executables."""
from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from .tables import markdown_table


def cmd_models(args: argparse.Namespace) -> int:
    from ..learning.models import REGISTRY, build_model, count_parameters, state_bytes_per_pixel

    rows = [("model", "bands", "parameters", "state B/px", "streams per line", "description")]
    for name, spec in REGISTRY.items():
        model = build_model(name, in_channels=args.bands)
        rows.append((name, str(args.bands), f"{count_parameters(model):,}",
                     str(state_bytes_per_pixel(model)),
                     "yes" if model.streams else "no (whole image)", spec.summary))
    print(markdown_table(rows))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run
    return run(args)


def cmd_train(args: argparse.Namespace) -> int:
    from ..learning.train import config_from_args, train
    train(config_from_args(args))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate
    summary = evaluate(args.models, args.data, args.out, args.threshold, args.device, args.panels,
                       args.nonempty_only, frame_lines=args.frame_lines, discard_above=args.discard_above)
    from .evaluate import markdown
    print(markdown(summary))
    print(f"wrote {args.out}/evaluation.json, evaluation.md and figures")
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from ..tools.cv import run
    return run(args)


def cmd_ship(args: argparse.Namespace) -> int:
    from ..tools.cv import ship
    from ..weights import models_dir
    target = ship(args.weights, args.cv, args.models_dir or models_dir(), args.cv_command)
    print(f"wrote {target} and its model card {target.with_suffix('.md')}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run
    return run(args)


def cmd_export(args: argparse.Namespace) -> int:
    from .export import run
    return run(args)


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert
    convert(args.source, args.out, args.encoding, args.storage, args.per_patch, args.clean_partial)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scannernet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"scannernet_ros {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="the model zoo: parameters, recurrent state, streaming")
    p.add_argument("--bands", type=int, default=3, choices=(3, 4), help="input bands (RGB or RGB+NIR)")
    p.set_defaults(func=cmd_models)

    for name, help_, arguments, func in (
        ("demo", "the on-board pipeline in one process over real rclpy", "tools.demo_args", cmd_demo),
        ("train", "train a model from bags, dataset folders or synthetic scenes", "learning.train", cmd_train),
        ("evaluate", "score models under both 38-Cloud protocols, with figures", "tools.evaluate", cmd_evaluate),
        ("cv", "K-fold cross-validation by scene: the table that picks recipes and the default model", "tools.cv", cmd_cv),
        ("bench", "the paper's Tables 2 and 4 here, full swath, end to end over ROS 2", "tools.bench_args", cmd_bench),
        ("export", "a streaming model's per-line step as ONNX (state as inputs and outputs, dynamic width)",
         "tools.export", cmd_export),
    ):
        p = sub.add_parser(name, help=help_)
        importlib.import_module(f"..{arguments}", __package__).add_arguments(p)
        p.set_defaults(func=func)

    p = sub.add_parser("ship", help="put trained weights under models/ with their cross-validated figures and a card")
    p.add_argument("weights", help="weights trained with the cross-validated recipe (runs/<model>/best.safetensors)")
    p.add_argument("--cv", required=True, help="the cv.json of `scannernet cv` that scored this recipe")
    p.add_argument("--cv-command", default="scannernet cv", help="the cv command line, quoted in the card")
    p.add_argument("--models-dir", default="", help="where shipped weights live (default: the package's models/)")
    p.set_defaults(func=cmd_ship)

    p = sub.add_parser("convert", help="dataset -> rosbag2 bags, one per scene")
    p.add_argument("source", help="38-Cloud split folder, L8 Biome folder, image file or synthetic:N[:SIZE]")
    p.add_argument("out", help="folder that will hold one bag per scene (must not exist)")
    p.add_argument("--encoding", default="16UC4", choices=("16UC4", "rgb16"))
    p.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"))
    p.add_argument("--per-patch", action="store_true", help="38-Cloud: one bag per patch, not per rebuilt scene")
    p.add_argument("--clean-partial", action="store_true",
                   help="complete an interrupted conversion in OUT: remove its half-written bags (.<scene>.partial), "
                        "keep its complete ones, write the rest")
    p.set_defaults(func=cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Known failures (bad files, bad arguments, full disks) are one line and exit status 2."""
    from ..bags import BagError
    from ..scenes import DatasetError
    from safetensors import SafetensorError

    from ..weights import WeightsError
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (WeightsError, DatasetError, BagError, ValueError, OSError, SafetensorError) as exc:
        print(f"scannernet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
