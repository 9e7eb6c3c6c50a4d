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

from ..learning.datasets import Sample, fingerprint, load_all
from ..learning.snow import check_bands as check_snow_bands
from ..learning.train import BAND_SETS, TrainConfig, train
from ..atomic import atomic_write
from ..weights import read_weights
from ..zoo import ZOO

REPORTED = ("iou", "f1", "precision", "recall")


def stratum(scene: str) -> str:
    """The biome of an L8 Biome scene id (``Barren_00``); other datasets form one stratum each."""
    head = scene.split("_")[0]
    return head if head.isalpha() and head[:1].isupper() and not head.isupper() else "other"


def group_of(scene: str) -> str:
    """What an unseen scene differs by: its biome for L8 Biome scenes, its dataset otherwise
    (38-Cloud scene ids are Landsat product ids, ``LC08_...``)."""
    name = stratum(scene)
    if name != "other":
        return name
    return "38-Cloud" if scene.startswith(("LC08_", "LC8")) else "other"


def make_folds(scenes: list[str], k: int, seed: int, grouping: str = "biome") -> list[list[str]]:
    """Disjoint lists of scenes covering all of them.

    ``grouping="biome"``: leave one group out (:func:`group_of`), so each held-out fold is ground
    of a kind no training scene shows, as an unseen scene's may be; ``k`` is ignored.
    ``grouping="scene"``: ``k`` folds with each biome spread over them (every fold sees every kind
    of ground, which flatters a model on unseen ground)."""
    scenes = sorted(set(scenes))
    if grouping == "biome":
        groups: dict[str, list[str]] = {}
        for s in scenes:
            groups.setdefault(group_of(s), []).append(s)
        if len(groups) < 2:
            raise ValueError(f"leave-one-group-out needs scenes of at least two groups, got {sorted(groups)}")
        return [groups[g] for g in sorted(groups)]
    if grouping != "scene":
        raise ValueError(f"grouping must be 'biome' or 'scene', got {grouping!r}")
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
    """Run one weights file over ``samples`` as the segmenter would, once; both protocols, the
    breakdown and the per-frame cover at every decision threshold of :data:`DECISION_GRID`, and the
    calibration of the probabilities."""
    import torch

    from .evaluate import Predictor, score_samples
    tallies, calibration = score_samples(Predictor(str(weights), torch.device("cpu")), samples, DECISION_GRID)
    by_threshold = {}
    for t, tally in tallies.items():
        report = tally.report()
        by_threshold[_key(t)] = {k: report[k] for k in ("pooled", "per_scene_mean", "breakdown", "cover", "scenes")}
    return {"by_threshold": by_threshold, "calibration": calibration.report()}


def _criterion(result: dict) -> float:
    """What a decision threshold is chosen for: pooled IoU and the per-scene IoU over every scene
    (cloud-free ones included, so over-calling clear ground costs), alike; nan counts as 0."""
    per_scene = result["per_scene_mean"].get("iou_all", result["per_scene_mean"]["iou"])
    values = [result["pooled"]["iou"], per_scene]
    return float(np.mean([0.0 if math.isnan(v) else v for v in values]))


def choose_threshold(folds: list[dict]) -> str:
    """The cut to ship: 0.5, unless the grid key with the best mean criterion over ``folds`` beats
    0.5 in the mean by more than the spread (sd) of its gain over the folds.  A cut picked from 17
    candidates on a few folds otherwise fits fold noise, and did not carry to unseen scenes."""
    half = _key(0.5)
    best = max((_key(t) for t in DECISION_GRID),
               key=lambda k: (np.mean([_criterion(f["by_threshold"][k]) for f in folds]), -abs(float(k) - 0.5)))
    gains = [_criterion(f["by_threshold"][best]) - _criterion(f["by_threshold"][half]) for f in folds]
    if len(gains) > 1 and float(np.mean(gains)) > float(np.std(gains, ddof=1)):
        return best
    return half


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


PROVENANCE = "fold.json"   # beside each fold's weights: the scenes and data they were trained on


def run_fold(model: str, fold: int, held: list[str], training: list[Sample], test: list[Sample],
             recipe: TrainConfig, out: Path, data: list[str], log=print, reuse: bool = False) -> dict:
    """Train ``model`` on ``training`` with ``recipe`` (or, with ``reuse``, take the weights a
    previous run trained the same way on the same scenes), score it on the held-out ``test`` scenes."""
    run = Path(out) / f"fold{fold}" / model
    started = time.monotonic()
    cfg = replace(recipe, model=model, out=str(run), data=data, val=[], val_fraction=0.0)
    provenance = {"held_out": sorted(held), "training_scenes": sorted({s.scene for s in training}),
                  "training_data": fingerprint(training)}
    stored = run / PROVENANCE
    same_scenes = stored.is_file() and json.loads(stored.read_text()) == provenance
    if reuse and same_scenes and _trained_with(run / "best.safetensors", cfg):
        log(f"[fold {fold} {model}] reusing {run / 'best.safetensors'} (same recipe, same training scenes)")
        seconds = read_weights(run / "best.safetensors")[0].training.get("seconds", 0.0)  # as trained
    else:
        if reuse:
            log(f"[fold {fold} {model}] training again: the weights in {run} were not trained with this "
                "recipe on these scenes")
        stored.unlink(missing_ok=True)
        train(replace(cfg, resume=False), log=lambda m: log(f"[fold {fold} {model}] {m}"), data=(training, []))
        run.mkdir(parents=True, exist_ok=True)
        atomic_write(stored, lambda tmp: Path(tmp).write_text(json.dumps(provenance, indent=1)))
        seconds = round(time.monotonic() - started, 1)
    return {"fold": fold, "test_scenes": held, "groups": sorted({group_of(x) for x in held}),
            "train_samples": len(training), "train_seconds": seconds, **score(run / "best.safetensors", test)}


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


def all_held_out(rows: list[dict]) -> dict:
    """Every held-out scene of every fold in one table, each at its fold's cut: pooled IoU,
    precision and recall over all their pixels, and per-scene IoU (over scenes with cloud, and over
    every scene with cloud-free ones counted 1 or 0) -- the figures an unseen set is scored by."""
    from ..metrics import Confusion
    total, cloudy, every = Confusion(), [], []
    for row in rows:
        for cm in row["scenes"].values():
            c = Confusion(cm["tp"], cm["fp"], cm["fn"], cm["tn"])
            total += c
            union = c.tp + c.fp + c.fn
            every.append(c.tp / union if union else 1.0)
            if c.tp + c.fn:
                cloudy.append(c.tp / union)
    pooled = total.scores()
    return {"scenes": len(every), "pooled_iou": pooled["iou"], "precision": pooled["precision"],
            "recall": pooled["recall"], "per_scene_iou": float(np.mean(cloudy)) if cloudy else math.nan,
            "per_scene_iou_all": float(np.mean(every)) if every else math.nan}


def summarise_model(raw: list[dict]) -> dict:
    """One model's folds: each scored at the cut the other folds choose, then mean ± sd over folds."""
    rows = nested(raw)
    at_half = [r["at_0.5"] for r in rows]
    return {
        "pooled": {k: summarise([r["pooled"][k] for r in rows]) for k in REPORTED},
        "per_scene": {k: summarise([r["per_scene_mean"][k] for r in rows]) for k in (*REPORTED, "iou_all")},
        "all_held_out": all_held_out(rows),
        "all_held_out_at_0.5": all_held_out(at_half),
        "breakdown": {k: summarise([r["breakdown"][k] for r in rows])
                      for k in ("recall_thin", "recall_thick", "errors_near_edge",
                                "fp_rate_first_16_rows", "fp_rate_other_rows")},
        "cover": {k: summarise([r["cover"][k] for r in rows]) for k in ("cover_mae", "discard_agreement")},
        "calibration": {k: summarise([r["calibration"][k] for r in rows]) for k in ("ece", "brier")},
        "cloud_free": {"scenes": sum(r["per_scene_mean"]["cloud_free_scenes"] for r in rows),
                       "fp_rate": summarise([r["per_scene_mean"]["cloud_free_fp_rate"] for r in rows])},
        "decision_threshold": {"chosen": float(choose_threshold(raw)),
                               "per_fold": [r["decision_threshold"] for r in rows]},
        "at_0.5": {"pooled": summarise([r["pooled"]["iou"] for r in at_half]),
                   "per_scene": summarise([r["per_scene_mean"]["iou"] for r in at_half])},
        "by_cut": cut_table(raw),
        "per_fold": rows,
    }


CARD_CUTS = ("0.20", "0.30", "0.40", "0.50", "0.60", "0.70")


def cut_table(raw: list[dict]) -> dict:
    """Precision, recall and IoU over all held-out scenes at several cuts, for a mission choosing
    its operating point with the segmenter's ``threshold``."""
    return {k: all_held_out([{"scenes": r["by_threshold"][k]["scenes"]} for r in raw]) for k in CARD_CUTS}


def cross_validate(data: list[str], models: list[str], folds: int, recipe: TrainConfig, out: Path,
                   log=print, workers: int = 1, train_only: list[str] = (), reuse: bool = False,
                   grouping: str = "biome") -> dict:
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
    fold_scenes = make_folds([s.scene for s in samples], folds, recipe.seed, grouping)
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
    summary = {"data": data, "train_only": list(train_only), "grouping": grouping, "folds": fold_scenes,
               "groups": [sorted({group_of(x) for x in f}) for f in fold_scenes], "recipe": asdict(recipe),
               "data_fingerprint": fingerprint(samples), "training_fingerprint": fingerprint(samples + extra),
               "models": {}}
    for model, raw in results.items():
        summary["models"][model] = summarise_model(raw)
    atomic_write(out / "cv.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1, default=float)))
    atomic_write(out / "cv.md", lambda tmp: Path(tmp).write_text(markdown(summary)))
    return summary


def _cell(s: dict) -> str:
    return "undefined" if math.isnan(s["mean"]) else f"{100 * s['mean']:.1f} ± {100 * s['sd']:.1f}"


def _pct(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{100 * v:.1f}"


def describe(summary: dict) -> str:
    """One sentence naming the protocol, data and budget of a cv run."""
    k, r = len(summary["folds"]), summary["recipe"]
    scenes = sum(len(f) for f in summary["folds"])
    how = (f"leave-one-group-out over {k} groups ({', '.join(g for gs in summary['groups'] for g in gs)})"
           if summary.get("grouping", "scene") == "biome" else f"{k}-fold cross-validation by scene")
    return (f"{how}, {scenes} scenes ({', '.join(summary['data'])}); seed {r['seed']}, {r['max_epochs']} epochs of "
            f"{r['steps_per_epoch']} steps per fold, {r['schedule']} learning rate from {r['lr']:g}, brightness "
            f"jitter {r['gain']:g}, clear-pixel loss weight {r.get('clear_weight', 1.0):g}"
            + (f", {r['composite']:g} of the crops under satellite-cloud-generator clouds" if r.get("composite") else "")
            + (f", {r['snow']:g} of the crops with snow painted on clear ground" if r.get("snow") else "")
            + (f"; every fold also trains on {', '.join(summary['train_only'])} (never scored)"
               if summary.get("train_only") else ""))


def markdown(summary: dict) -> str:
    lines = [describe(summary) + ".", "",
             "Every held-out scene at once (each at the cut the other folds choose; cloud-free scenes included), "
             "x100. Per-scene IoU over every scene counts a cloud-free scene 1 when nothing in it is called "
             "cloud, else 0:", "",
             "| model | scenes | IoU pooled | precision | recall | IoU per scene (cloudy) | IoU per scene (every) "
             "| cover error per frame | discard right | ECE | Brier | cut: shipped (per fold) | IoU pooled / per scene at 0.5 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in summary["models"].items():
        a, h, d = m["all_held_out"], m["all_held_out_at_0.5"], m["decision_threshold"]
        lines.append(f"| {name} | {a['scenes']} | {_pct(a['pooled_iou'])} | {_pct(a['precision'])} | "
                     f"{_pct(a['recall'])} | {_pct(a['per_scene_iou'])} | {_pct(a['per_scene_iou_all'])} | "
                     f"{_cell(m['cover']['cover_mae'])} | {_cell(m['cover']['discard_agreement'])} | "
                     f"{_cell(m['calibration']['ece'])} | {_cell(m['calibration']['brier'])} | "
                     f"{d['chosen']:.2f} ({', '.join(f'{t:.2f}' for t in d['per_fold'])}) | "
                     f"{_pct(h['pooled_iou'])} / {_pct(h['per_scene_iou'])} |")
    lines += ["", "Spread over the held-out folds (mean ± sd of each fold's figure):", "",
              "| model | IoU pooled | IoU per scene | precision per scene | recall per scene | FP rate, cloud-free scenes |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, m in summary["models"].items():
        cf = m["cloud_free"]
        lines.append(f"| {name} | {_cell(m['pooled']['iou'])} | {_cell(m['per_scene']['iou'])} | "
                     f"{_cell(m['per_scene']['precision'])} | {_cell(m['per_scene']['recall'])} | "
                     f"{_cell(cf['fp_rate'])} ({cf['scenes']} scenes) |")
    lines += ["", "Per held-out group, pooled IoU at the nested cut, x100:", "",
              "| model | " + " | ".join(", ".join(g) for g in summary["groups"]) + " |",
              "|---|" + "---:|" * len(summary["groups"])]
    for name, m in summary["models"].items():
        lines.append(f"| {name} | " + " | ".join(_pct(r["pooled"]["iou"]) for r in m["per_fold"]) + " |")
    lines += ["", "Operating points over every held-out scene (precision / recall / pooled IoU, x100):", "",
              "| model | " + " | ".join(f"cut {c}" for c in CARD_CUTS) + " |", "|---|" + "---:|" * len(CARD_CUTS)]
    for name, m in summary["models"].items():
        lines.append(f"| {name} | " + " | ".join(
            f"{_pct(x['precision'])} / {_pct(x['recall'])} / {_pct(x['pooled_iou'])}"
            for x in (m["by_cut"][c] for c in CARD_CUTS)) + " |")
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
    p.add_argument("--grouping", choices=("biome", "scene"), default="biome",
                   help="biome: leave one group out (each L8 Biome biome, 38-Cloud on its own), as unseen "
                        "scenes differ; scene: --folds folds with every biome spread over them")
    p.add_argument("--folds", type=int, default=4, help="folds for --grouping scene (ignored for biome)")
    p.add_argument("--reuse", action="store_true",
                   help="score fold weights already in --out instead of training them again, where their "
                        "metadata shows the same model, data and recipe")
    p.add_argument("--train-only", nargs="+", default=[], metavar="SOURCE",
                   help="sources added to every fold's training data and never scored (e.g. synthetic:32)")
    p.add_argument("--bands", choices=("rgb", "rgbn", "rgbns"), default="rgb",
                   help="input bands of every model (rgbns, with SWIR1: L8 Biome data only)")
    p.add_argument("--epochs", type=int, default=RECIPE.max_epochs, help="epochs per fold (fixed budget)")
    p.add_argument("--steps-per-epoch", type=int, default=RECIPE.steps_per_epoch, help="steps of 64 crops per epoch")
    p.add_argument("--seed", type=int, default=RECIPE.seed, help="seed of the weights and crops (and of the scene folds)")
    p.add_argument("--schedule", choices=("constant", "cosine"), default=RECIPE.schedule, help="learning-rate schedule")
    p.add_argument("--gain", type=float, default=RECIPE.gain, help="scene brightness jitter of the augmentation")
    p.add_argument("--clear-weight", type=float, default=RECIPE.clear_weight,
                   help="loss weight of clear pixels against cloud's 1")
    p.add_argument("--composite", type=float, default=RECIPE.composite,
                   help="share of training crops under a satellite-cloud-generator cloud (0 = none)")
    p.add_argument("--snow", type=float, default=RECIPE.snow,
                   help="share of training crops with snow painted on clear ground (needs --bands rgbns; 0 = none)")
    p.add_argument("--jobs", type=int, default=1, help="folds trained in parallel processes, one thread each")
    p.add_argument("--out", default="out/cv", help="folder for the fold weights, cv.json and cv.md")


# The recipe the shipped weights are trained with (see models/*.md): real data only, a fixed
# budget of 40 epochs x 10 steps of 64 crops, weight EMA, no validation split (all data trains).
RECIPE = TrainConfig(max_epochs=40, steps_per_epoch=10, patience=10 ** 6, ema=0.99, clip=1.0, lr=5e-3,
                     val_fraction=0.0, device="cpu")


def run(args: argparse.Namespace) -> int:
    models = list(dict.fromkeys(["threshold", *args.models]))
    recipe = replace(RECIPE, bands=args.bands, max_epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                     seed=args.seed, schedule=args.schedule, gain=args.gain, composite=args.composite,
                     snow=args.snow, clear_weight=args.clear_weight)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    if args.snow > 0:
        check_snow_bands(BAND_SETS[args.bands])
    if args.epochs < 1 or args.steps_per_epoch < 1:
        raise ValueError(f"--epochs and --steps-per-epoch must be at least 1, got {args.epochs} and {args.steps_per_epoch}")
    summary = cross_validate(args.data, models, args.folds, recipe, Path(args.out), workers=args.jobs,
                             train_only=args.train_only, reuse=args.reuse, grouping=args.grouping)
    print(markdown(summary))
    print(f"wrote {args.out}/cv.json and cv.md")
    return 0


def train_command(model: str, recipe: dict, data: list[str], out: str) -> str:
    """The ``scannernet train`` line that trains ``model`` on ``data`` with the cross-validated recipe."""
    return (f"scannernet train --model {model} --data {' '.join(data)} --bands {recipe['bands']} "
            f"--val-fraction 0 --max-epochs {recipe['max_epochs']} --steps-per-epoch {recipe['steps_per_epoch']} "
            f"--lr {recipe['lr']:g} --schedule {recipe.get('schedule', 'constant')} --gain {recipe.get('gain', 0.2):g} "
            f"--ema {recipe['ema']:g} --clip {recipe['clip']:g} --seed {recipe['seed']} --device cpu --out {out}"
            + (f" --composite {recipe['composite']:g}" if recipe.get("composite") else "")
            + (f" --snow {recipe['snow']:g}" if recipe.get("snow") else "")
            + (f" --clear-weight {recipe['clear_weight']:g}" if recipe.get("clear_weight", 1.0) != 1.0 else ""))


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


MODEL_KEYS = ("pooled", "per_scene", "per_fold", "decision_threshold")
RECIPE_KEYS = ("bands", "batch_size", "crop", "strip", "lr", "schedule", "gain", "composite", "snow", "clear_weight",
               "weight_decay", "ema", "clip", "max_epochs", "steps_per_epoch", "seed")


def load_cv(path: Path) -> dict:
    """A cv.json, checked for what ship reads; a ValueError naming the file and what is wrong."""
    try:
        summary = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("models"), dict) \
            or not isinstance(summary.get("recipe"), dict) or not isinstance(summary.get("folds"), list):
        raise ValueError(f"{path}: not a cv.json of `scannernet cv` (no models, recipe and folds)")
    if "threshold" not in summary["models"]:
        raise ValueError(f"{path}: no threshold row; every cv run scores the brightness-threshold reference")
    for model, row in summary["models"].items():
        missing = [k for k in MODEL_KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            raise ValueError(f"{path}: the {model!r} row lacks {', '.join(missing)}")
    return summary


def check_provenance(weights: Path, training: dict, summary: dict, cv_json: Path) -> None:
    """The weights were trained with the recipe the cv run scored, on the data it scored (plus its
    training-only sources): otherwise the card would carry figures these weights never earned."""
    cfg = training.get("config", {})
    recipe = summary["recipe"]
    defaults = asdict(TrainConfig())
    differ = [k for k in RECIPE_KEYS if cfg.get(k, defaults[k]) != recipe.get(k, defaults[k])]
    if differ:
        raise ValueError(f"{weights} was not trained with the recipe {cv_json} scored: "
                         + ", ".join(f"{k} {cfg.get(k, defaults[k])!r} against {recipe.get(k, defaults[k])!r}" for k in differ))

    def resolved(paths):
        return sorted(str(Path(p).resolve()) if not str(p).startswith("synthetic") else str(p) for p in paths)
    if resolved(cfg.get("data", [])) != resolved([*summary.get("data", []), *summary.get("train_only", [])]):
        raise ValueError(f"{weights} was trained on {cfg.get('data')}, not on the data {cv_json} scored "
                         f"({summary.get('data')} plus training-only {summary.get('train_only', [])})")
    stored, expected = training.get("data_fingerprint"), summary.get("training_fingerprint")
    if stored and expected and stored != expected:
        raise ValueError(f"{weights} was trained on other pixels than {cv_json} scored under the same names "
                         "(their data fingerprints differ)")


def ship(weights: Path, cv_json: Path, models_dir: Path, cv_command: str, name: str = "") -> Path:
    """Copy trained weights under ``models/`` with their cross-validated figures in the metadata,
    and write the model card beside them: what was run, on what, for how long, how it scored, and
    at which cut (moved from 0.5 only where the move beat the spread over the folds).

    ``name``: what the weights are shipped as, the architecture's own name unless given (a named
    variant, such as ``scannernet_swir`` for ScannerNet on other bands)."""
    import torch

    from ..weights import load_model, save_model
    summary = load_cv(cv_json)
    net, info = load_model(weights)
    architecture = info.architecture
    name = name or architecture
    if name != architecture and (name in ZOO or not name.isidentifier()):
        raise ValueError(f"cannot ship {architecture} weights as {name!r}: a variant's name is a plain identifier "
                         "that is not another architecture's")
    if architecture not in summary["models"]:
        raise ValueError(f"{cv_json} holds no cross-validation of {architecture!r} "
                         f"(it has {', '.join(summary['models'])})")
    check_provenance(weights, info.training, summary, cv_json)
    m, reference = summary["models"][architecture], summary["models"]["threshold"]
    decision = m.get("decision_threshold", {}).get("chosen", 0.5)
    fold_decision_threshold(net, info, decision)
    info.metrics = {"cv": {"protocol": describe(summary), "folds": len(summary["folds"]),
                           "pooled": m["pooled"], "per_scene": m["per_scene"],
                           "threshold_pooled": reference["pooled"], "threshold_per_scene": reference["per_scene"],
                           "decision_threshold": decision,
                           **({"all_held_out": m["all_held_out"], "threshold_all_held_out": reference["all_held_out"]}
                              if "all_held_out" in m and "all_held_out" in reference else {})}}
    models_dir = Path(models_dir)
    target = models_dir / f"{name}.safetensors"
    save_model(target, net.to(torch.device("cpu")), info)
    atomic_write(models_dir / f"{name}.md", lambda tmp: Path(tmp).write_text(card(name, info, summary, cv_command)))
    return target


def card(name: str, info, summary: dict, cv_command: str) -> str:
    """The model card: training, then the cross-validated figures with the threshold's beside them."""
    architecture = info.architecture
    m, reference = summary["models"][architecture], summary["models"]["threshold"]
    decision = m.get("decision_threshold", {}).get("chosen", 0.5)
    training = info.training
    cfg = training.get("config", {})
    moved = (f"{decision:.2f}: it beat 0.5 on the folds by more than their spread, so it is folded into the "
             "output (the segmenter's default `threshold` of 0.5 applies it)" if decision != 0.5 else
             "0.5: no other cut beat it on the folds by more than their spread, so the output is left as trained")
    lines = [f"# {name}", "",
             f"Shipped weights `models/{name}.safetensors`: {architecture}, {training.get('parameters', 0):,} "
             f"parameters, input bands {', '.join(info.input.bands)}.", "",
             "## Training", "",
             f"Data: {', '.join(cfg.get('data', []))} ({training.get('train_samples', '?')} patches, all of them: "
             "the figures below are cross-validated, not measured on these weights).",
             f"Time: {training.get('seconds', 0):.0f} s on one CPU thread.",
             f"Decision cut: {moved}.", "",
             "Command:", "",
             "```bash", train_command(architecture, summary["recipe"], cfg.get("data", []), f"runs/{name}"),
             f"scannernet ship runs/{name}/best.safetensors --cv out/cv/cv.json"
             + (f" --name {name}" if name != architecture else ""), "```", "",
             "## Cross-validated figures", "",
             f"From `{cv_command}`: {describe(summary)}. The model is trained on the other folds with the same "
             "recipe and run line by line as the segmenter runs it; each fold is scored at the cut the other "
             "folds choose.", ""]
    if "all_held_out" in m:
        lines += ["Every held-out scene at once (x100):", "",
                  "| | IoU pooled | precision | recall | IoU per scene (cloudy) | IoU per scene (every) "
                  "| cover error per frame | discard decision right | ECE | Brier |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for label, row in ((name, m), ("threshold (reference)", reference)):
            a = row["all_held_out"]
            lines.append(f"| {label} | {_pct(a['pooled_iou'])} | {_pct(a['precision'])} | {_pct(a['recall'])} | "
                         f"{_pct(a['per_scene_iou'])} | {_pct(a['per_scene_iou_all'])} | "
                         f"{_cell(row['cover']['cover_mae'])} | {_cell(row['cover']['discard_agreement'])} | "
                         f"{_cell(row['calibration']['ece'])} | {_cell(row['calibration']['brier'])} |")
        lines += ["", "Operating points: precision / recall / pooled IoU over every held-out scene at the "
                  "segmenter's `threshold` (x100; the cut on the trained model's probability"
                  + (f", before the {decision:.2f} folded into these weights" if decision != 0.5 else "") + "):", "",
                  "| | " + " | ".join(f"cut {c}" for c in CARD_CUTS) + " |", "|---|" + "---:|" * len(CARD_CUTS)]
        for label, row in ((name, m), ("threshold (reference)", reference)):
            lines.append(f"| {label} | " + " | ".join(
                f"{_pct(x['precision'])} / {_pct(x['recall'])} / {_pct(x['pooled_iou'])}"
                for x in (row["by_cut"][c] for c in CARD_CUTS)) + " |")
        lines += [""]
    lines += ["Per held-out fold (IoU pooled / per scene, x100):", "",
              "| fold | held-out scenes | " + name + " | threshold | cut (chosen by the other folds) |",
              "|---:|---|---:|---:|---:|"]
    for mine, ref in zip(m["per_fold"], reference["per_fold"]):
        lines.append(f"| {mine['fold']} | {', '.join(mine['test_scenes'])} | "
                     f"{_pct(mine['pooled']['iou'])} / {_pct(mine['per_scene_mean']['iou'])} | "
                     f"{_pct(ref['pooled']['iou'])} / {_pct(ref['per_scene_mean']['iou'])} | "
                     f"{mine.get('decision_threshold', 0.5):.2f} |")
    return "\n".join(lines) + "\n"
