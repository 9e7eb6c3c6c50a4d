"""Training, read top to bottom: data, model, optimiser, the loop, checkpoints.

The paper's recipe is the default: RGB input, 15 % of the data held out (whole scenes when scenes
are known), Adam, batch 64, binary cross-entropy on logits, early stopping on validation IoU, at
most 1,000 epochs.  Streaming models are trained on strips of lines with the recurrent state
carried from strip to strip across a patch (truncated backpropagation through time), so they learn
to use memory that spans more lines than one strip.

Run under ``torchrun`` for several processes (DistributedDataParallel; gloo on CPU, nccl on CUDA).
"""
from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

from .composite import cloud_bank, composite
from .snow import check_bands as check_snow_bands, paint_snow
from .datasets import Sample, band_index, fingerprint, load_all, split_by_scene
from ..metrics import NO_DATA, Evaluation
from .models import ScannerNet, build_model, count_parameters, resolve_device, widen
from ..normalise import InputSpec
from ..weights import ModelInfo, atomic_write, load_model, resolve_model_path, save_model

BAND_SETS = {"rgb": ("red", "green", "blue"), "rgbn": ("red", "green", "blue", "nir"),
             "rgbns": ("red", "green", "blue", "nir", "swir1")}


@dataclass
class TrainConfig:
    model: str = "scannernet"
    data: list[str] = field(default_factory=lambda: ["synthetic:64"])
    val: list[str] = field(default_factory=list)   # explicit validation sources; else a split of data
    bands: str = "rgb"
    val_fraction: float = 0.15
    batch_size: int = 64
    crop: int = 128              # square training crops (whole patches for validation)
    strip: int = 32              # rows per backpropagation strip for streaming models
    lr: float = 5e-3
    schedule: str = "constant"   # or "cosine": the learning rate decays to 0 over max_epochs
    gain: float = 0.2            # scene brightness jitter of the augmentation: x (1 +- gain)
    composite: float = 0.0       # share of crops under a satellite-cloud-generator cloud (0 = none)
    snow: float = 0.0            # share of crops with snow painted on clear ground (needs SWIR1; 0 = none)
    clear_weight: float = 1.0    # loss weight of clear pixels against cloud's 1: >1 buys precision on bright ground
    weight_decay: float = 0.0    # >0: AdamW with this decoupled weight decay
    ema: float = 0.0             # >0: validate and save an exponential moving average of the weights
    clip: float = 0.0            # >0: clip the gradient norm; recurrent nets spike without it
    init: str = ""               # start from these weights (a smaller ScannerNet is widened into the model)
    select: str = "pooled"       # validation IoU that picks the best epoch: pooled pixels or scene_mean
    max_epochs: int = 1000
    patience: int = 30
    steps_per_epoch: int = 0     # 0: enough batches to cover the training pixels once
    max_minutes: float = 0.0     # wall-clock budget; 0 = none
    seed: int = 0
    device: str = "auto"
    out: str = "runs/scannernet"
    resume: bool = False


class StripModel(nn.Module):
    """One strip of rows with the state carried in and out; what DDP wraps and calls."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        if getattr(self.net, "streams", False):
            return self.net.scan(image, state or None)
        return self.net(image), ()


def input_spec(samples: list[Sample], bands: tuple[str, ...]) -> InputSpec:
    """Per-band mean and std of the training reflectance, over valid pixels."""
    index = band_index(samples, bands)
    values = np.concatenate([s.reflectance[index][:, s.mask != NO_DATA] for s in samples], axis=1)
    return InputSpec(bands=bands, mean=tuple(float(m) for m in values.mean(1)),
                     std=tuple(float(max(s, 1e-3)) for s in values.std(1)))


def prepare(samples: list[Sample], bands: tuple[str, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Reflectance and target (-1 where no data) per sample, as tensors, once."""
    index = band_index(samples, bands)
    out = []
    for s in samples:
        y = np.where(s.mask == NO_DATA, -1.0, s.mask).astype(np.float32)
        out.append((torch.from_numpy(np.ascontiguousarray(s.reflectance[index])), torch.from_numpy(y)))
    return out


def normalise(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """The Normaliser's standardisation on a batch ``(..., bands, H, W)`` of reflectance."""
    mean = torch.tensor(spec.mean, dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype).view(-1, 1, 1)
    return (x - mean) / std


def augment(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator,
            gain: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """What differs between scenes and sensors, so that a model learns cloud rather than one
    sensor's look: any of the eight flips and quarter turns (clouds have no up or left), a scene
    gain, a per-band gain and offset (calibration, atmosphere and sensor response shift the bands
    against each other), and now and then a thin haze that lifts dark ground and flattens contrast
    without being labelled cloud."""
    if rng.random() < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    if rng.random() < 0.5:
        x, y = x.flip(-2), y.flip(-2)
    if rng.random() < 0.5 and x.shape[-1] == x.shape[-2]:
        x, y = x.transpose(-1, -2), y.transpose(-1, -2)
    bands = x.shape[0]
    scale = rng.uniform(1.0 - gain, 1.0 + gain) * rng.uniform(0.93, 1.07, size=(bands, 1, 1))
    offset = rng.uniform(-0.03, 0.03, size=(bands, 1, 1))
    x = x * torch.from_numpy(scale.astype(np.float32)) + torch.from_numpy(offset.astype(np.float32))
    if rng.random() < 0.3:
        amount, level = rng.uniform(0.0, 0.1), rng.uniform(0.2, 0.4)
        x = x * (1.0 - amount) + amount * level
    return x, y


def random_batch(data, batch: int, crop: int, rng: np.random.Generator,
                 gain: float = 0.2, bank: torch.Tensor | None = None, share: float = 0.0,
                 snow: float = 0.0, bands: tuple[str, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` random crops of reflectance and targets; small images are padded as no data.
    With a cloud ``bank``, a ``share`` of the crops get one of its clouds composited over them;
    a ``snow`` share get snow painted on their clear ground (``bands`` names the crops' bands)."""
    xs, ys = [], []
    for i in rng.integers(0, len(data), batch):
        x, y = data[i]
        h, w = y.shape
        ch, cw = min(crop, h), min(crop, w)
        r, c = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        x, y = x[:, r:r + ch, c:c + cw], y[r:r + ch, c:c + cw]
        if ch < crop or cw < crop:
            x = nn.functional.pad(x, (0, crop - cw, 0, crop - ch))
            y = nn.functional.pad(y, (0, crop - cw, 0, crop - ch), value=-1.0)
        if bank is not None and rng.random() < share:
            x, y = composite(x, y, bank, rng)
        if snow > 0 and rng.random() < snow:
            x, y = paint_snow(x, y, bands, rng)
        x, y = augment(x, y, rng, gain)
        xs.append(x)
        ys.append(y)
    return torch.stack(xs), torch.stack(ys)[:, None]


def masked_bce(logits: torch.Tensor, target: torch.Tensor, clear_weight: float = 1.0) -> torch.Tensor:
    """BCE over valid pixels; ``clear_weight`` weighs clear pixels against cloud, because a false
    cloud on clear ground costs a mission a frame it would have downlinked."""
    valid = target >= 0
    t = target[valid]
    weight = None if clear_weight == 1.0 else torch.where(t > 0.5, 1.0, clear_weight)
    return nn.functional.binary_cross_entropy_with_logits(logits[valid], t, weight=weight)


@torch.no_grad()
def validate(net: nn.Module, data, spec: InputSpec, device: torch.device, select: str = "pooled") -> dict[str, float]:
    """Scores under the ``select`` protocol, plus both IoUs.  Pooled pixels is the paper's measure;
    the scene mean keeps a few overcast patches from outvoting every partly cloudy one."""
    net.eval()
    evaluation = Evaluation()
    for i, (x, y) in enumerate(data):
        logits = net(normalise(x, spec)[None].to(device))[0, 0].float().cpu().numpy()
        truth = np.where(y.numpy() < 0, NO_DATA, y.numpy()).astype(np.uint8)
        evaluation.add(str(i), logits >= 0.0, truth)
    net.train()
    pooled, scene_mean = evaluation.pooled(), evaluation.scene_mean()
    scores = dict(pooled if select == "pooled" else scene_mean)
    return {**scores, "iou_pooled": pooled["iou"], "iou_scene_mean": scene_mean["iou"]}


def initialise(net: nn.Module, path: str, bands: tuple[str, ...], seed: int) -> InputSpec:
    """Start from trained weights: the same architecture is loaded as is, a smaller ScannerNet
    is widened into ``net`` (see :func:`models.widen`).  Returns the weights' input scaling, which
    training must keep: the weights only mean something on inputs scaled that way."""
    start, info = load_model(resolve_model_path(path))
    if tuple(info.input.bands) != tuple(bands):
        raise ValueError(f"{path} takes bands {info.input.bands}, training uses {bands}")
    if isinstance(net, ScannerNet) and isinstance(start, ScannerNet) and count_parameters(start) < count_parameters(net):
        widen(start, net, generator=torch.Generator().manual_seed(seed))
    else:
        net.load_state_dict(start.state_dict())  # raises on any mismatch
    return info.input


def fit_threshold(samples: list[Sample], bands: tuple[str, ...]) -> tuple[float, float]:
    """The brightness threshold ``t`` with the best pooled IoU on ``samples``, and that IoU.

    Brightness is the mean of the R, G, B reflectance; candidates every 0.005 from 0 to 2."""
    if not {"red", "green", "blue"} <= set(bands):
        raise ValueError(f"the threshold model needs red, green and blue; bands are {bands}")
    edges = np.arange(0.0, 2.0 + 1e-9, 0.005)
    cloud, clear = np.zeros(len(edges) + 1), np.zeros(len(edges) + 1)
    rgb = band_index(samples, ("red", "green", "blue"))
    for s in samples:
        valid = s.mask != NO_DATA
        bins = np.searchsorted(edges, s.reflectance[rgb].mean(0)[valid], side="left")
        truth = s.mask[valid] == 1
        cloud += np.bincount(bins[truth], minlength=len(edges) + 1)
        clear += np.bincount(bins[~truth], minlength=len(edges) + 1)
    if cloud.sum() == 0:
        raise ValueError("cannot fit the threshold: the training data hold no cloud pixel")
    # predicted cloud above edges[i]: the bins after i
    tp = cloud[::-1].cumsum()[::-1][1:]
    fp = clear[::-1].cumsum()[::-1][1:]
    iou = tp / (cloud.sum() + fp)
    best = int(np.argmax(iou))
    return float(edges[best]), float(iou[best])


def train_threshold(cfg: "TrainConfig", samples: list[Sample] | None = None, log=print) -> dict:
    """``scannernet train --model threshold``: fit ``t`` on all the training data; nothing to iterate."""
    samples = load_all(cfg.data) if samples is None else samples
    bands = BAND_SETS[cfg.bands]
    t, iou = fit_threshold(samples, bands)
    spec = InputSpec(bands=bands, mean=(0.0,) * len(bands), std=(1.0,) * len(bands))  # input = reflectance
    info = ModelInfo("threshold", config={"t": t}, input=spec, trained=True,
                     training={"config": asdict(cfg), "train_samples": len(samples), "parameters": 0,
                               "data_fingerprint": fingerprint(samples)},
                     metrics={"train_pooled_iou": iou})
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    net = build_model("threshold", in_channels=len(bands), t=t)
    for name in ("best.safetensors", "last.safetensors"):
        save_model(out / name, net, info)
    log(f"threshold: t = {t:.3f} (pooled IoU {iou:.4f} on {len(samples)} training samples)")
    return {"t": t, "train_pooled_iou": iou}


def save_train_state(path: Path, optimiser: torch.optim.Optimizer, progress: dict, net: nn.Module,
                     averaged: nn.Module | None, info: ModelInfo) -> None:
    """Everything ``--resume`` needs in one file, written in one atomic step: the weights, their
    EMA, Adam's moments, the RNG and the loop's position.  A kill at any point leaves either the
    previous checkpoint or this one, never weights of one epoch beside a state of another."""
    tensors = {"torch_rng": torch.get_rng_state()}
    tensors.update({f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()})
    if averaged is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in averaged.state_dict().items()})
    for i, state in optimiser.state_dict()["state"].items():
        for k, v in state.items():
            tensors[f"optim.{i}.{k}"] = v.detach().cpu().reshape(-1) if v.dim() == 0 else v.detach().cpu()
    meta = {"progress": json.dumps(progress), **info.to_metadata()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_train_state(path: Path, cfg: "TrainConfig", optimiser: torch.optim.Optimizer, net: nn.Module,
                     averaged: nn.Module | None) -> tuple[dict, InputSpec]:
    """Restore a :func:`save_train_state` checkpoint; one ValueError naming the file for anything
    that does not fit this run (another model or bands, a truncated file)."""
    from safetensors import SafetensorError, safe_open
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        progress = json.loads(meta["progress"])
        info = ModelInfo.from_metadata(meta)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable training checkpoint ({type(exc).__name__}: {exc}); "
                         "start again without --resume") from None
    if info.architecture != cfg.model or tuple(info.input.bands) != BAND_SETS[cfg.bands]:
        raise ValueError(f"{path}: --resume needs the run's own --model and --bands: the checkpoint is "
                         f"{info.architecture} on {','.join(info.input.bands)}, this run asks for "
                         f"{cfg.model} on {','.join(BAND_SETS[cfg.bands])}")
    try:
        net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if averaged is not None:
            averaged.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        sd = optimiser.state_dict()
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, i, k = key.split(".", 2)
                sd["state"].setdefault(int(i), {})[k] = value.reshape(()) if k == "step" else value
        optimiser.load_state_dict(sd)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: checkpoint does not fit {cfg.model} ({exc})") from None
    torch.set_rng_state(tensors["torch_rng"])
    return progress, info.input


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(epochs, [h["train_loss"] for h in history])
    ax[0].set(xlabel="epoch", ylabel="train BCE", yscale="log")
    ax[1].plot(epochs, [h["val_iou"] for h in history])
    ax[1].set(xlabel="epoch", ylabel="validation IoU (pooled)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(cfg: TrainConfig, log=print, data: tuple[list[Sample], list[Sample]] | None = None) -> dict:
    """Train ``cfg.model``; ``data`` = (training, validation) samples instead of ``cfg.data``.

    With no validation samples (``--val-fraction 0`` or an empty list in ``data``) the run is a
    fixed budget: the weights (or their EMA) at the end are the result, and best = last."""
    if cfg.model == "threshold":
        return train_threshold(cfg, None if data is None else data[0], log)
    # -- processes and devices -------------------------------------------------------------
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = resolve_device(cfg.device)
    if not distributed:
        return _train(cfg, log, data, device, distributed)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    # _train's frame holds the DistributedDataParallel wrapper, whose reducer holds the group:
    # it is gone (and collected) before the group is torn down, so the group's last reference
    # drops here, on this thread, with no collective pending on any rank
    progress = _train(cfg, log, data, device, distributed)
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    return progress


def _train(cfg: TrainConfig, log, data, device: torch.device, distributed: bool) -> dict:
    """The run on this process; with ``distributed``, one rank of an initialised group."""
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    main_process = rank == 0
    torch.manual_seed(cfg.seed + rank)
    rng = np.random.default_rng([cfg.seed, rank])
    out = Path(cfg.out)
    if main_process:
        out.mkdir(parents=True, exist_ok=True)

    # -- data -----------------------------------------------------------------------------
    if data is not None:
        train_samples, val_samples = data
    elif cfg.val:
        train_samples, val_samples = load_all(cfg.data), load_all(cfg.val)
    elif cfg.val_fraction > 0:
        train_samples, val_samples = split_by_scene(load_all(cfg.data), cfg.val_fraction, cfg.seed)
    else:
        train_samples, val_samples = load_all(cfg.data), []
    if not train_samples:
        raise ValueError("no training samples")
    if not val_samples and cfg.val_fraction > 0 and data is None:
        raise ValueError("no validation samples: give --val, or --val-fraction 0 for a fixed budget")
    bands = BAND_SETS[cfg.bands]
    if cfg.snow > 0:
        check_snow_bands(bands)
    spec = input_spec(train_samples, bands)
    train_data, val_data = prepare(train_samples, bands), prepare(val_samples, bands)
    pixels = sum(y.numel() for _, y in train_data)
    steps_per_epoch = cfg.steps_per_epoch or max(1, math.ceil(pixels / (cfg.crop ** 2 * cfg.batch_size * world)))

    # -- model and optimiser --------------------------------------------------------------
    net = build_model(cfg.model, in_channels=len(bands))
    if cfg.init and not cfg.resume:
        spec = initialise(net, cfg.init, bands, cfg.seed)
    net = net.to(device)
    optimiser = (torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
                 if cfg.weight_decay > 0 else torch.optim.Adam(net.parameters(), lr=cfg.lr))
    progress = {"epoch": 0, "step": 0, "best_iou": -1.0, "bad_epochs": 0, "history": [], "seconds": 0.0}
    averaged = None
    if cfg.ema > 0:  # smooths the noise a small validation set puts into checkpoint selection
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        averaged = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema))
    if cfg.resume and (out / "train_state.safetensors").is_file():
        # the scaling the run started with (--init may have set it) comes back with the weights
        progress, spec = load_train_state(out / "train_state.safetensors", cfg, optimiser, net, averaged)
        if "numpy_rng" in progress:   # the batch stream goes on where it stopped: the run resumes exactly
            rng.bit_generator.state = progress["numpy_rng"]
        else:                         # a checkpoint from before the stream was saved: a fresh one
            rng = np.random.default_rng([cfg.seed, rank, progress["epoch"]])
        log(f"resumed at epoch {progress['epoch']} (best IoU {progress['best_iou']:.4f})")
    kept = averaged.module if averaged is not None else net  # what is validated and saved as best
    model = StripModel(net)
    if distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
    info = ModelInfo(cfg.model, config=dict(build_config(cfg.model)), input=spec, trained=True,
                     training={"config": asdict(cfg), "train_samples": len(train_samples),
                               "data_fingerprint": fingerprint(train_samples),
                               "val_samples": len(val_samples), "parameters": count_parameters(net)})
    if main_process:
        log(f"{cfg.model}: {count_parameters(net):,} parameters, {len(train_samples)} training / "
            f"{len(val_samples)} validation samples, {steps_per_epoch} steps per epoch, {world} process(es) on {device}")

    bank = cloud_bank(cfg.crop, len(spec.bands), cfg.seed) if cfg.composite > 0 else None
    if main_process and cfg.resume and progress["epoch"] > 0:
        # a kill after the state of an epoch was written but before its weights were: write them
        # now from the state, which holds that epoch's weights
        info.training.update(epochs=progress["epoch"], seconds=round(progress["seconds"], 1))
        save_model(out / "last.safetensors", net, info)
        if progress.get("last_improved", True) or not (out / "best.safetensors").is_file():
            save_model(out / "best.safetensors", kept, info)

    # -- the loop -------------------------------------------------------------------------
    started = time.monotonic() - progress["seconds"]
    while progress["epoch"] < cfg.max_epochs and progress["bad_epochs"] < cfg.patience:
        losses = []
        for step in range(steps_per_epoch):
            if main_process and sys.stderr.isatty():
                done = int(20 * step / steps_per_epoch)
                print(f"\r  epoch {progress['epoch'] + 1} [{'#' * done}{'.' * (20 - done)}] "
                      f"{step}/{steps_per_epoch}", end="", file=sys.stderr, flush=True)
            if cfg.schedule == "cosine":
                done = progress["step"] / max(1, cfg.max_epochs * steps_per_epoch)
                for group in optimiser.param_groups:
                    group["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))
            x, y = random_batch(train_data, cfg.batch_size, cfg.crop, rng, cfg.gain, bank, cfg.composite,
                                cfg.snow, bands)
            x, y = normalise(x, spec).to(device), y.to(device)
            state, strip = (), cfg.strip if getattr(net, "streams", False) else x.shape[2]
            for r in range(0, x.shape[2], strip):
                with torch.autocast(device.type, enabled=device.type == "cuda"):
                    logits, state = model(x[:, :, r:r + strip], state)
                    loss = masked_bce(logits.float(), y[:, :, r:r + strip], cfg.clear_weight) if (y[:, :, r:r + strip] >= 0).any() else None
                state = tuple(s.detach() for s in state)
                if loss is None:
                    continue
                optimiser.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.clip > 0:
                    scaler.unscale_(optimiser)
                    nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
                scaler.step(optimiser)
                scaler.update()
                if averaged is not None:
                    averaged.update_parameters(net)
                losses.append(loss.item())
            progress["step"] += 1
        if main_process and sys.stderr.isatty():
            print("\r" + " " * 60 + "\r", end="", file=sys.stderr)  # clear the progress line
        progress["epoch"] += 1
        progress["seconds"] = time.monotonic() - started
        stop = False
        if main_process:  # only rank 0 validates, so only it can decide to stop
            val = validate(kept, val_data, spec, device, cfg.select) if val_data else NO_VALIDATION
            row = {"epoch": progress["epoch"], "step": progress["step"], "train_loss": float(np.mean(losses)),
                   "val_iou": val["iou"], "val_f1": val["f1"], "val_accuracy": val["accuracy"],
                   "val_iou_pooled": val["iou_pooled"], "val_iou_scene_mean": val["iou_scene_mean"],
                   "seconds": round(progress["seconds"], 1)}
            progress["history"].append(row)
            score = 0.0 if math.isnan(val["iou"]) else val["iou"]  # NaN: no cloud anywhere, none predicted
            improved = score > progress["best_iou"] or not val_data  # fixed budget: the latest is the result
            progress["best_iou"] = max(progress["best_iou"], score)
            progress["bad_epochs"] = 0 if improved else progress["bad_epochs"] + 1
            progress["last_improved"] = improved
            info.training["epochs"] = progress["epoch"]
            info.training["seconds"] = round(progress["seconds"], 1)
            info.metrics = {f"val_{cfg.select}": val} if val_data else {}
            progress["numpy_rng"] = rng.bit_generator.state
            save_train_state(out / "train_state.safetensors", optimiser, progress, net, averaged, info)
            save_model(out / "last.safetensors", net, info)   # for users; --resume reads the state above
            if improved:
                save_model(out / "best.safetensors", kept, info)
            write_logs(out, progress["history"])
            log(f"epoch {row['epoch']:4d}  loss {row['train_loss']:.4f}  val IoU {val['iou_pooled']:.4f} pooled, "
                f"{val['iou_scene_mean']:.4f} scene mean"
                f"{'  *' if improved else ''}  ({row['seconds']:.0f} s)")
            over_budget = bool(cfg.max_minutes) and progress["seconds"] > cfg.max_minutes * 60
            if over_budget:
                log(f"time budget of {cfg.max_minutes} min reached")
            stop = over_budget or progress["bad_epochs"] >= cfg.patience
        if distributed:  # every rank stops together, or the others would wait forever in all-reduce
            flag = torch.tensor([float(stop)], device=device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        if stop:
            break
    return progress


NO_VALIDATION = {k: math.nan for k in ("iou", "f1", "accuracy", "iou_pooled", "iou_scene_mean")}


def build_config(name: str) -> dict:
    from .models import REGISTRY
    return REGISTRY[name].config


def write_logs(out: Path, history: list[dict]) -> None:
    atomic_write(out / "log.json", lambda tmp: Path(tmp).write_text(json.dumps(history, indent=1)))

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
    atomic_write(out / "log.csv", write_csv)
    try:
        plot_curves(history, out / "curves.png")
    except ImportError:
        pass


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--model", default=d.model, help="registry name")
    p.add_argument("--data", nargs="+", default=d.data, help="sources: synthetic:N[:SIZE], 38-Cloud split, bags, L8 Biome folder")
    p.add_argument("--val", nargs="*", default=d.val, help="explicit validation sources (else a split of --data)")
    p.add_argument("--bands", choices=BAND_SETS, default=d.bands,
                   help="input bands: rgb (the paper), rgbn (+ NIR) or rgbns (+ NIR and SWIR1: L8 Biome data only)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="share of the data held out for validation, whole scenes at a time (0 = fixed budget, no validation)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="crops per step")
    p.add_argument("--crop", type=int, default=d.crop, help="side of the square training crops in pixels")
    p.add_argument("--strip", type=int, default=d.strip,
                   help="rows per backpropagation strip of the streaming models (the state carries over)")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate (Adam)")
    p.add_argument("--schedule", choices=("constant", "cosine"), default=d.schedule,
                   help="learning rate: constant, or cosine decay to 0 over --max-epochs")
    p.add_argument("--gain", type=float, default=d.gain, help="scene brightness jitter of the augmentation (x 1 +- gain)")
    p.add_argument("--composite", type=float, default=d.composite,
                   help="share of crops under a satellite-cloud-generator cloud, composited over real ground (0 = none)")
    p.add_argument("--snow", type=float, default=d.snow,
                   help="share of crops with snow and ice painted on clear ground, labelled clear "
                        "(needs SWIR1, --bands rgbns; 0 = none)")
    p.add_argument("--clear-weight", type=float, default=d.clear_weight,
                   help="loss weight of clear pixels (cloud weighs 1); above 1 trades recall for precision")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay (0 = Adam)")
    p.add_argument("--ema", type=float, default=d.ema, help="weight EMA decay for validation and best (0 = off)")
    p.add_argument("--init", default=d.init, help="start from these weights (registry name or file); "
                   "a smaller ScannerNet is widened into the model")
    p.add_argument("--select", choices=("pooled", "scene_mean"), default=d.select,
                   help="validation IoU that picks the best epoch")
    p.add_argument("--clip", type=float, default=d.clip, help="gradient norm clip (0 = off)")
    p.add_argument("--max-epochs", type=int, default=d.max_epochs, help="epochs at most")
    p.add_argument("--patience", type=int, default=d.patience,
                   help="stop after this many epochs without a better validation IoU")
    p.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch,
                   help="steps per epoch (0 = enough to cover the training pixels once)")
    p.add_argument("--max-minutes", type=float, default=d.max_minutes, help="wall-clock budget in minutes (0 = none)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the weights, the crops and the validation split")
    p.add_argument("--device", default=d.device, help="cpu, cuda, cuda:N or auto")
    p.add_argument("--out", default=d.out, help="run folder: best/last weights, train_state, logs, curves")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its train_state (exactly where it stopped)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{k: getattr(args, k) for k in TrainConfig.__dataclass_fields__})


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``torchrun -m scannernet_ros.learning.train ...``."""
    p = argparse.ArgumentParser(prog="scannernet train")
    add_arguments(p)
    train(config_from_args(p.parse_args(argv)))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A worker leaves without interpreter finalisation: the group is destroyed and every
        # file written, and what finalisation would add is the C++ teardown of the collective
        # library's threads, which aborted a worker (SIGABRT, "terminate called without an
        # active exception") now and then under load after the run had finished.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
