"""The scannernet command: the offline jobs of scannernet_ros (models, demo, train, cv, evaluate,
ship, convert, bench, export). The ROS nodes are separate executables (ros2 run scannernet_ros ...)."""
from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from .tables import markdown_table


def cmd_models(args: argparse.Namespace) -> int:
    from ..learning.models import REGISTRY, build_model
    from ..weights import WeightsError, models_dir, read_weights, shipped_models

    rows = [("model", "parameters", "state B/px", "runs", "shipped weights (bands)",
             "cross-validated IoU pooled / per scene, x100", "threshold's, same folds", "description")]
    for name, spec in REGISTRY.items():
        model = build_model(name, in_channels=args.bands)
        shipped, ours, reference = "none", "", ""
        path = models_dir() / f"{name}.safetensors"
        if path.is_file():
            try:
                info, _ = read_weights(path)
            except WeightsError as exc:
                shipped = f"unreadable ({exc})"
            else:
                shipped = f"yes ({', '.join(info.input.bands)})"
                ours, reference = _cv_headline(info.metrics.get("cv", {}))
        rows.append(_model_row(name, model, shipped, ours, reference, spec.summary))
    for name in shipped_models():   # named variants: an architecture of the zoo trained on other bands
        if name in REGISTRY:
            continue
        try:
            info, _ = read_weights(models_dir() / f"{name}.safetensors")
        except WeightsError as exc:
            rows.append((name, "", "", "", f"unreadable ({exc})", "", "", ""))
            continue
        model = build_model(info.architecture, in_channels=len(info.input.bands), **info.config)
        rows.append(_model_row(name, model, f"yes ({', '.join(info.input.bands)})",
                               *_cv_headline(info.metrics.get("cv", {})),
                               f"{REGISTRY[info.architecture].summary}, on {len(info.input.bands)} bands"))
    print(markdown_table(rows))
    print("\nParameters and state are for the --bands given (a named variant: for its own bands); the shipped "
          "figures come from each card's "
          "cross-validation (models/<name>.md), with the brightness threshold's on the same folds beside them.")
    return 0


def _model_row(name: str, model, shipped: str, ours: str, reference: str, summary: str) -> tuple[str, ...]:
    """One row of ``scannernet models``."""
    from ..learning.models import count_parameters, state_bytes_per_pixel
    return (name, f"{count_parameters(model):,}", str(state_bytes_per_pixel(model)),
            "per line" if model.streams else "whole image", shipped, ours, reference, summary)


def _cv_headline(cv: dict) -> tuple[str, str]:
    """(model, threshold) headline IoUs of a card's cross-validation, with its protocol."""
    if "all_held_out" in cv:
        a, t = cv["all_held_out"], cv["threshold_all_held_out"]
        return (f"{100 * a['pooled_iou']:.1f} / {100 * a['per_scene_iou']:.1f} (leave one biome out)",
                f"{100 * t['pooled_iou']:.1f} / {100 * t['per_scene_iou']:.1f}")
    if "pooled" in cv:
        return (f"{100 * cv['pooled']['iou']['mean']:.1f} / {100 * cv['per_scene']['iou']['mean']:.1f} "
                f"({cv.get('folds', '?')}-fold by scene, older protocol)",
                f"{100 * cv['threshold_pooled']['iou']['mean']:.1f} / {100 * cv['threshold_per_scene']['iou']['mean']:.1f}")
    return "", ""


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
    target = ship(args.weights, args.cv, args.models_dir or models_dir(), args.cv_command, args.name)
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
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="scannernet", description=__doc__, formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"scannernet_ros {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="the model zoo: parameters, recurrent state, streaming",
                       description="The model zoo: parameters and recurrent state per pixel for the bands "
                                   "given, whether each model runs per line, which have shipped weights and how "
                                   "well those did in cross-validation beside the brightness threshold.",
                       formatter_class=formatter)
    p.add_argument("--bands", type=int, default=3, choices=(3, 4, 5),
                   help="input bands for the parameter and state counts (RGB, + NIR, + NIR and SWIR1)")
    p.set_defaults(func=cmd_models)

    for name, help_, description, arguments, func in (
        ("demo", "the on-board pipeline in one process over real rclpy",
         "Camera, segmenter and waterfall in one process over real rclpy, on a real Landsat 8 patch shipped "
         f"with the package (default) or another source; prints lines, latency and the model's IoU beside the "
         f"brightness threshold's, and writes OUT/demo.png. Default model: {_default_model()}.",
         "tools.demo_args", cmd_demo),
        ("train", "train a model from bags, dataset folders or synthetic scenes",
         "Train one model of the zoo (nanoGPT-style loop: data, model, optimiser, checkpoints; --resume "
         "continues exactly).", "learning.train", cmd_train),
        ("evaluate", "score models under both 38-Cloud protocols, with figures",
         "Run models over labelled data exactly as the segmenter runs them; pooled and per-scene scores, "
         "per-frame cloud-cover error, calibration and figures, the brightness threshold always beside them.",
         "tools.evaluate", cmd_evaluate),
        ("cv", "cross-validation that predicts unseen scenes: the table that picks recipes and the default model",
         "Leave one group out (each L8 Biome biome, 38-Cloud on its own) or K folds by scene: train each model "
         "on the other folds, score it on the held-out one line by line; writes cv.json and cv.md.",
         "tools.cv", cmd_cv),
        ("bench", "the paper's Tables 2 and 4 here, full swath, end to end over ROS 2",
         "Benchmarks that print tables: memory, latency, the line step against its GEMM floor, full swath, "
         "ROS 2 end to end, and the llvm-mca prediction for ARM boards.", "tools.bench_args", cmd_bench),
        ("export", "a streaming model's per-line step as ONNX (state as inputs and outputs, dynamic width)",
         "Export a streaming model's per-line step as ONNX for TensorRT, OpenVINO or onnxruntime, or "
         "--verify an export against its weights.", "tools.export", cmd_export),
    ):
        p = sub.add_parser(name, help=help_, description=description, formatter_class=formatter)
        importlib.import_module(f"..{arguments}", __package__).add_arguments(p)
        p.set_defaults(func=func)

    p = sub.add_parser("ship", help="put trained weights under models/ with their cross-validated figures and a card",
                       description="Copy weights trained with a cross-validated recipe under models/, with the "
                                   "cv figures in their metadata and a model card; refuses weights whose recipe "
                                   "or data differ from the cv run's.", formatter_class=formatter)
    p.add_argument("weights", help="weights trained with the cross-validated recipe (runs/<model>/best.safetensors)")
    p.add_argument("--cv", required=True, help="the cv.json of `scannernet cv` that scored this recipe")
    p.add_argument("--cv-command", default="scannernet cv", help="the cv command line, quoted in the card")
    p.add_argument("--models-dir", default="", help="where shipped weights live (default: the package's models/)")
    p.add_argument("--name", default="", help="ship as this name, a variant of the architecture (scannernet_swir: "
                                              "ScannerNet on R, G, B, NIR, SWIR1); default: the architecture's name")
    p.set_defaults(func=cmd_ship)

    p = sub.add_parser("convert", help="dataset -> rosbag2 bags, one per scene",
                       description="Write one rosbag2 bag per scene (scanline and gt_line on the Landsat 8 line "
                                   "schedule), for replay_eval.launch.py.", formatter_class=formatter)
    p.add_argument("source", help="38-Cloud split folder, L8 Biome folder, image file or synthetic:N[:SIZE]")
    p.add_argument("out", help="folder that will hold one bag per scene (must not exist)")
    p.add_argument("--encoding", default="16UC4", choices=("16UC4", "16UC5", "rgb16"),
                   help="scanline encoding in the bags (16UC5 adds SWIR1: L8 Biome sources only)")
    p.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"), help="rosbag2 storage plugin")
    p.add_argument("--per-patch", action="store_true", help="38-Cloud: one bag per patch, not per rebuilt scene")
    p.add_argument("--clean-partial", action="store_true",
                   help="complete an interrupted conversion in OUT: remove its half-written bags (.<scene>.partial), "
                        "keep its complete ones, write the rest")
    p.set_defaults(func=cmd_convert)
    return parser


def _default_model() -> str:
    from ..zoo import DEFAULT_MODEL
    return DEFAULT_MODEL


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
