"""Cross-validation by scene: how a model and its training recipe will do on scenes they never saw.

Scenes (not patches) are dealt into K folds, stratified by the biome that L8 Biome names carry
(``<Biome>_<nn>_<id>``), so every fold sees every kind of ground.  For each fold, each model is
trained on the other folds with the same recipe and budget that ship the weights, then run on the
held-out fold exactly as the segmenter runs it (line by line through :class:`LineSegmenter`).
The brightness threshold is a row of every table, fitted on the same training folds.

This table, never a look at a held-out set, chooses recipes and the default model.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ..learning.datasets import Sample, load_all
from ..learning.train import TrainConfig, train
from ..atomic import atomic_write
from ..weights import read_weights

REPORTED = ("iou", "f1", "precision", "recall")


def stratum(scene: str) -> str:
    """The biome of an L8 Biome scene id (``Barren_00``); other datasets form one stratum each."""
    head = scene.split("_")[0]
    return head if head.isalpha() and head[:1].isupper() and not head.isupper() else "other"


def make_folds(scenes: list[str], k: int, seed: int) -> list[list[str]]:
    """``k`` disjoint lists of scenes covering all of them, each stratum spread over the folds."""
    scenes = sorted(set(scenes))
    if not 2 <= k <= len(scenes):
        raise ValueError(f"--folds must be between 2 and the number of scenes ({len(scenes)}), got {k}")
    rng = np.random.default_rng(seed)
    by_stratum: dict[str, list[str]] = {}
    for s in scenes:
        by_stratum.setdefault(stratum(s), []).append(s)
    folds: list[list[str]] = [[] for _ in range(k)]
    turn = 0
    for name in sorted(by_stratum):
        members = by_stratum[name]
        rng.shuffle(members)
        for s in members:   # deal round-robin, carrying on where the last stratum stopped
            folds[turn % k].append(s)
            turn += 1
    return [sorted(f) for f in folds]


# Decision thresholds on the model's probability that cross-validation chooses from: a model
# trained with BCE on few scenes need not be best cut at 0.5.
DECISION_GRID = tuple(round(0.1 + 0.05 * i, 2) for i in range(17))   # 0.1 ... 0.9


def _key(t: float) -> str:
    return f"{t:.2f}"


def score(weights: Path, samples: list[Sample]) -> dict:
    """Run one weights file over ``samples`` as the segmenter would, once; both protocols and the
    breakdown at every decision threshold of :data:`DECISION_GRID`."""
    import torch

    from .evaluate import Predictor, score_samples
    tallies = score_samples(Predictor(str(weights), torch.device("cpu")), samples, DECISION_GRID)
    by_threshold = {}
    for t, (evaluation, breakdown) in tallies.items():
        report = evaluation.report()
        by_threshold[_key(t)] = {"pooled": report["pooled"], "per_scene_mean": report["per_scene_mean"],
                                 "breakdown": breakdown.report()}
    return {"by_threshold": by_threshold}


def _criterion(result: dict) -> float:
    """What a decision threshold is chosen for: pooled and per-scene IoU alike (nan counts as 0)."""
    values = [result["pooled"]["iou"], result["per_scene_mean"]["iou"]]
    return float(np.mean([0.0 if math.isnan(v) else v for v in values]))


def choose_threshold(folds: list[dict]) -> str:
    """The grid key with the best mean criterion over ``folds`` (the lowest such key on ties)."""
    return max((_key(t) for t in DECISION_GRID),
               key=lambda k: (np.mean([_criterion(f["by_threshold"][k]) for f in folds]), -float(k)))


def nested(rows: list[dict]) -> list[dict]:
    """Each fold scored at the decision threshold the *other* folds choose: an estimate of the
    shipped model that never looks at the fold it scores."""
    out = []
    for i, row in enumerate(rows):
        k = choose_threshold([r for j, r in enumerate(rows) if j != i])
        out.append({**{key: v for key, v in row.items() if key != "by_threshold"}, **row["by_threshold"][k],
                    "decision_threshold": float(k), "at_0.5": row["by_threshold"][_key(0.5)]})
    return out


def _one_thread() -> None:
    import torch
    torch.set_num_threads(1)  # workers share the cores; one BLAS thread each


def _trained_with(path: Path, cfg: TrainConfig) -> bool:
    """Whether ``path`` holds weights trained with ``cfg``'s model, data and recipe (for --reuse)."""
    if not path.is_file():
        return False
    stored = read_weights(path)[0].training.get("config", {})
    defaults = asdict(TrainConfig())   # fields newer than the file hold their defaults there

    def same(key: str, value) -> bool:
        old = stored.get(key, defaults.get(key))
        if key in ("data", "val"):       # the same folders, however they were spelt
            return [str(Path(x).resolve()) for x in old or []] == [str(Path(x).resolve()) for x in value or []]
        return old == value
    return all(same(k, v) for k, v in asdict(cfg).items() if k not in ("out", "resume"))


def run_fold(model: str, fold: int, held: list[str], training: list[Sample], test: list[Sample],
             recipe: TrainConfig, out: Path, data: list[str], log=print, reuse: bool = False) -> dict:
    """Train ``model`` on ``training`` with ``recipe`` (or, with ``reuse``, take the weights a
    previous run trained the same way), score it on the held-out ``test`` scenes."""
    run = Path(out) / f"fold{fold}" / model
    started = time.monotonic()
    cfg = replace(recipe, model=model, out=str(run), data=data, val=[], val_fraction=0.0)
    if reuse and _trained_with(run / "best.safetensors", cfg):
        log(f"[fold {fold} {model}] reusing {run / 'best.safetensors'} (trained with this recipe)")
        seconds = read_weights(run / "best.safetensors")[0].training.get("seconds", 0.0)  # as trained
    else:
        train(cfg, log=lambda m: log(f"[fold {fold} {model}] {m}"), data=(training, []))
        seconds = round(time.monotonic() - started, 1)
    return {"fold": fold, "test_scenes": held, "train_samples": len(training), "train_seconds": seconds,
            **score(run / "best.safetensors", test)}


def _logged(result: dict, model: str, log) -> dict:
    at = result["by_threshold"][_key(0.5)]
    p, s = at["pooled"], at["per_scene_mean"]
    log(f"fold {result['fold']} {model}: at 0.5 pooled IoU {p['iou']:.4f}, per-scene IoU {s['iou']:.4f} "
        f"({len(result['test_scenes'])} scenes held out, {result['train_seconds']:.0f} s)")
    return result


def summarise(values: list[float]) -> dict[str, float]:
    defined = [v for v in values if not math.isnan(v)]
    if not defined:
        return {"mean": math.nan, "sd": math.nan, "folds": 0}
    return {"mean": float(np.mean(defined)), "sd": float(np.std(defined, ddof=1)) if len(defined) > 1 else 0.0,
            "folds": len(defined)}


def cross_validate(data: list[str], models: list[str], folds: int, recipe: TrainConfig, out: Path,
                   log=print, workers: int = 1, train_only: list[str] = (), reuse: bool = False) -> dict:
    """``train_only`` sources (synthetic scenes, say) join every fold's training data and are never
    scored: the table then says whether they help on real scenes the models did not see."""
    samples = load_all(data)
    if not samples:
        raise ValueError(f"no labelled samples in {data}")
    extra = load_all(list(train_only))
    if train_only and not extra:
        raise ValueError(f"no labelled samples in --train-only {list(train_only)}")
    shared = sorted({s.scene for s in extra} & {s.scene for s in samples})
    if shared:
        raise ValueError(f"--train-only holds scenes that are also scored: {', '.join(shared[:5])}")
    fold_scenes = make_folds([s.scene for s in samples], folds, recipe.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for i, held in enumerate(fold_scenes):
        training = [s for s in samples if s.scene not in held] + extra
        if not any((s.mask == 1).any() for s in training):
            raise ValueError(f"fold {i}: the training folds hold no cloud pixel; use fewer folds")
        test = [s for s in samples if s.scene in held]
        jobs += [(model, i, held, training, test) for model in models]
    results: dict[str, list[dict]] = {m: [None] * len(fold_scenes) for m in models}
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_one_thread) as pool:
            futures = [pool.submit(run_fold, *job, recipe, out, [*data, *train_only], print, reuse) for job in jobs]
            for job, future in zip(jobs, futures):
                results[job[0]][job[1]] = _logged(future.result(), job[0], log)
    else:
        _one_thread()   # the budget is stated per fold on one thread: the same in either mode
        for job in jobs:
            results[job[0]][job[1]] = _logged(run_fold(*job, recipe, out, [*data, *train_only], log, reuse),
                                              job[0], log)
    summary = {"data": data, "train_only": list(train_only), "folds": fold_scenes, "recipe": asdict(recipe), "models": {}}
    for model, raw in results.items():
        rows = nested(raw)
        at_half = [r["at_0.5"] for r in rows]
        summary["models"][model] = {
            "pooled": {k: summarise([r["pooled"][k] for r in rows]) for k in REPORTED},
            "per_scene": {k: summarise([r["per_scene_mean"][k] for r in rows]) for k in REPORTED},
            "breakdown": {k: summarise([r["breakdown"][k] for r in rows])
                          for k in ("recall_thin", "recall_thick", "errors_near_edge",
                                    "fp_rate_first_16_rows", "fp_rate_other_rows")},
            "cloud_free": {"scenes": sum(r["per_scene_mean"]["cloud_free_scenes"] for r in rows),
                           "fp_rate": summarise([r["per_scene_mean"]["cloud_free_fp_rate"] for r in rows])},
            "decision_threshold": {"chosen": float(choose_threshold(raw)),
                                   "per_fold": [r["decision_threshold"] for r in rows]},
            "at_0.5": {"pooled": summarise([r["pooled"]["iou"] for r in at_half]),
                       "per_scene": summarise([r["per_scene_mean"]["iou"] for r in at_half])},
            "per_fold": rows,
        }
    atomic_write(out / "cv.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1, default=float)))
    atomic_write(out / "cv.md", lambda tmp: Path(tmp).write_text(markdown(summary)))
    return summary


def _cell(s: dict) -> str:
    return "undefined" if math.isnan(s["mean"]) else f"{100 * s['mean']:.1f} ± {100 * s['sd']:.1f}"


def markdown(summary: dict) -> str:
    k = len(summary["folds"])
    scenes = sum(len(f) for f in summary["folds"])
    r = summary["recipe"]
    lines = [f"{k}-fold cross-validation by scene over {scenes} scenes ({', '.join(summary['data'])}); "
             f"seed {r['seed']}, {r['max_epochs']} epochs of {r['steps_per_epoch']} steps per fold, "
             f"{r['schedule']} learning rate from {r['lr']:g}, brightness jitter {r['gain']:g}"
             + (f", {r['composite']:g} of the crops under satellite-cloud-generator clouds" if r.get("composite") else "")
             + (f"; every fold also trains on {', '.join(summary['train_only'])} (never scored)"
                if summary.get("train_only") else "")
             + "; mean ± sd over folds, x100. Each fold is scored at the decision threshold (on the model's "
               "probability) that the other folds choose, for every model alike; the shipped threshold is the "
               "one all folds choose.", "",
             "| model | IoU pooled | IoU per scene | F1 per scene | precision per scene | recall per scene "
             "| FP rate, cloud-free scenes | decision threshold: shipped (per fold) | IoU pooled / per scene at 0.5 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in summary["models"].items():
        cf, d, half = m["cloud_free"], m["decision_threshold"], m["at_0.5"]
        lines.append(f"| {name} | {_cell(m['pooled']['iou'])} | {_cell(m['per_scene']['iou'])} | "
                     f"{_cell(m['per_scene']['f1'])} | {_cell(m['per_scene']['precision'])} | "
                     f"{_cell(m['per_scene']['recall'])} | {_cell(cf['fp_rate'])} ({cf['scenes']} scenes) | "
                     f"{d['chosen']:.2f} ({', '.join(f'{t:.2f}' for t in d['per_fold'])}) | "
                     f"{_cell(half['pooled'])} / {_cell(half['per_scene'])} |")
    lines += ["", "| model | recall, thin cloud | recall, thick cloud | share of errors within 3 px of an edge "
              "| FP rate, first 16 rows | FP rate, other rows |", "|---|---:|---:|---:|---:|---:|"]
    for name, m in summary["models"].items():
        b = m["breakdown"]
        lines.append(f"| {name} | " + " | ".join(_cell(b[k]) for k in (
            "recall_thin", "recall_thick", "errors_near_edge", "fp_rate_first_16_rows", "fp_rate_other_rows")) + " |")
    return "\n".join(lines) + "\n"


DEFAULT_MODELS = ["threshold", "baseline1d", "scannernet_small", "scannernet"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", required=True, help="labelled sources (L8 Biome folder, 38-Cloud split, ...)")
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="registry names; threshold is always added")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--reuse", action="store_true",
                   help="score fold weights already in --out instead of training them again, where their "
                        "metadata shows the same model, data and recipe")
    p.add_argument("--train-only", nargs="+", default=[], metavar="SOURCE",
                   help="sources added to every fold's training data and never scored (e.g. synthetic:32)")
    p.add_argument("--bands", choices=("rgb", "rgbn"), default="rgb")
    p.add_argument("--epochs", type=int, default=RECIPE.max_epochs, help="epochs per fold (fixed budget)")
    p.add_argument("--steps-per-epoch", type=int, default=RECIPE.steps_per_epoch)
    p.add_argument("--seed", type=int, default=RECIPE.seed)
    p.add_argument("--schedule", choices=("constant", "cosine"), default=RECIPE.schedule)
    p.add_argument("--gain", type=float, default=RECIPE.gain, help="scene brightness jitter of the augmentation")
    p.add_argument("--composite", type=float, default=RECIPE.composite,
                   help="share of training crops under a satellite-cloud-generator cloud (0 = none)")
    p.add_argument("--jobs", type=int, default=1, help="folds trained in parallel processes, one thread each")
    p.add_argument("--out", default="out/cv")


# The recipe the shipped weights are trained with (see models/*.md): real data only, a fixed
# budget of 40 epochs x 10 steps of 64 crops, weight EMA, no validation split (all data trains).
RECIPE = TrainConfig(max_epochs=40, steps_per_epoch=10, patience=10 ** 6, ema=0.99, clip=1.0, lr=5e-3,
                     val_fraction=0.0, device="cpu")


def run(args: argparse.Namespace) -> int:
    models = list(dict.fromkeys(["threshold", *args.models]))
    recipe = replace(RECIPE, bands=args.bands, max_epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                     seed=args.seed, schedule=args.schedule, gain=args.gain, composite=args.composite)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    summary = cross_validate(args.data, models, args.folds, recipe, Path(args.out), workers=args.jobs,
                             train_only=args.train_only, reuse=args.reuse)
    print(markdown(summary))
    print(f"wrote {args.out}/cv.json and cv.md")
    return 0


def train_command(model: str, recipe: dict, data: list[str], out: str) -> str:
    """The ``scannernet train`` line that trains ``model`` on ``data`` with the cross-validated recipe."""
    return (f"scannernet train --model {model} --data {' '.join(data)} --bands {recipe['bands']} "
            f"--val-fraction 0 --max-epochs {recipe['max_epochs']} --steps-per-epoch {recipe['steps_per_epoch']} "
            f"--lr {recipe['lr']:g} --schedule {recipe.get('schedule', 'constant')} --gain {recipe.get('gain', 0.2):g} "
            f"--ema {recipe['ema']:g} --clip {recipe['clip']:g} --seed {recipe['seed']} --device cpu --out {out}"
            + (f" --composite {recipe['composite']:g}" if recipe.get("composite") else ""))


def fold_decision_threshold(net, info, t: float) -> None:
    """Make 0.5 on the model's probability mean what ``t`` meant: subtract logit(t) from the bias of
    the output layer (for the brightness threshold, move its ``t``).  Every consumer that cuts at
    0.5 (the segmenter's default, cloud cover, evaluate) then cuts where cross-validation chose."""
    import torch
    if not 0.0 < t < 1.0:
        raise ValueError(f"decision threshold must lie in (0, 1), got {t}")
    shift = math.log(t / (1.0 - t))
    if info.architecture == "threshold":
        from ..learning.models import BrightnessThreshold
        info.config = {**info.config, "t": round(info.config.get("t", net.t) + shift / BrightnessThreshold.SHARPNESS, 6)}
        net.t = info.config["t"]
    else:
        name, bias = [(n, p) for n, p in net.named_parameters() if n.endswith("bias")][-1]
        if bias.shape != (1,):
            raise ValueError(f"{info.architecture}: the last bias {name} is not a one-logit output")
        with torch.no_grad():
            bias -= shift
    info.training = {**info.training, "decision_threshold": t}


def ship(weights: Path, cv_json: Path, models_dir: Path, cv_command: str) -> Path:
    """Copy trained weights under ``models/`` with their cross-validated figures in the metadata,
    and write the model card beside them: what was run, on what, for how long, and how it scored."""
    import torch

    from ..weights import load_model, save_model
    summary = json.loads(Path(cv_json).read_text())
    net, info = load_model(weights)
    name = info.architecture
    if name not in summary["models"]:
        raise ValueError(f"{cv_json} holds no cross-validation of {name!r} (it has {', '.join(summary['models'])})")
    m, reference = summary["models"][name], summary["models"]["threshold"]
    decision = m.get("decision_threshold", {}).get("chosen", 0.5)
    fold_decision_threshold(net, info, decision)
    info.metrics = {"cv": {"folds": len(summary["folds"]), "pooled": m["pooled"], "per_scene": m["per_scene"],
                           "threshold_pooled": reference["pooled"], "threshold_per_scene": reference["per_scene"],
                           "decision_threshold": decision}}
    models_dir = Path(models_dir)
    target = models_dir / f"{name}.safetensors"
    save_model(target, net.to(torch.device("cpu")), info)
    training = info.training
    cfg = training.get("config", {})
    lines = [f"# {name}", "",
             f"Shipped weights `models/{name}.safetensors`: {training.get('parameters', 0):,} parameters, "
             f"input bands {', '.join(info.input.bands)}.", "",
             "## Training", "",
             f"Data: {', '.join(cfg.get('data', []))} ({training.get('train_samples', '?')} real patches, "
             "all of them: the figures below are cross-validated, not measured on these weights).",
             f"Time: {training.get('seconds', 0):.0f} s on one CPU thread.",
             f"Decision threshold: {decision:.2f} on the trained model's probability, chosen by cross-validation "
             "and folded into the output (so the segmenter's default `threshold` of 0.5 applies it).", "",
             "Command:", "",
             "```bash", train_command(name, summary["recipe"], cfg.get("data", []), f"runs/{name}"),
             f"scannernet ship runs/{name}/best.safetensors --cv out/cv/cv.json", "```", "",
             "## Cross-validated figures", "",
             f"From `{cv_command}` ({len(summary['folds'])} folds by scene, stratified by biome; the model is "
             "trained on the other folds with the same recipe and run line by line as the segmenter runs it). "
             "Each fold is scored at the decision threshold the other folds choose. Mean ± sd over folds, x100:", "",
             "| | IoU pooled | IoU per scene | F1 per scene | precision per scene | recall per scene |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, row in ((name, m), ("threshold (reference)", reference)):
        lines.append(f"| {label} | {_cell(row['pooled']['iou'])} | {_cell(row['per_scene']['iou'])} | "
                     f"{_cell(row['per_scene']['f1'])} | {_cell(row['per_scene']['precision'])} | "
                     f"{_cell(row['per_scene']['recall'])} |")
    lines += ["", "Per fold (IoU pooled / per scene, x100):", "",
              "| fold | held-out scenes | " + name + " | threshold | decision threshold (chosen by the other folds) |",
              "|---:|---|---:|---:|---:|"]
    for mine, ref in zip(m["per_fold"], reference["per_fold"]):
        lines.append(f"| {mine['fold']} | {', '.join(mine['test_scenes'])} | "
                     f"{100 * mine['pooled']['iou']:.1f} / {100 * mine['per_scene_mean']['iou']:.1f} | "
                     f"{100 * ref['pooled']['iou']:.1f} / {100 * ref['per_scene_mean']['iou']:.1f} | "
                     f"{mine.get('decision_threshold', 0.5):.2f} |")
    atomic_write(models_dir / f"{name}.md", lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    return target
