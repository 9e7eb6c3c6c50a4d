"""Model files: safetensors tensors plus explicit JSON metadata, never pickle.

A file records the architecture name and its hyperparameters, the input bands and normalisation,
and where known the training data and measured metrics, so that a node given only a path can build
the right network and feed it correctly.

Reading (:func:`read_weights`) is numpy only: the on-board CPU path never imports torch.
:func:`load_model` and :func:`save_model` build and write torch networks, for training, CUDA and
the whole-image models.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file

from .atomic import atomic_write  # noqa: F401 - re-exported for the training loop
from .normalise import InputSpec
from .zoo import ZOO, tensor_shapes

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "scannernet_ros.weights/1"


class WeightsError(RuntimeError):
    """A model file that cannot be used; the message names the file and what is wrong with it."""

    def __init__(self, path: os.PathLike | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass
class ModelInfo:
    """Everything a weights file says about its model besides the tensors."""

    architecture: str
    config: dict = field(default_factory=dict)
    input: InputSpec = field(default_factory=InputSpec)
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    trained: bool = False

    def to_metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "architecture": self.architecture,
            "config": json.dumps(self.config),
            "input": json.dumps(self.input.to_dict()),
            "training": json.dumps(self.training),
            "metrics": json.dumps(self.metrics),
            "trained": json.dumps(self.trained),
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> "ModelInfo":
        config = json.loads(meta["config"])
        if not isinstance(config, dict):
            raise ValueError(f"'config' must be an object, got {type(config).__name__}")
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        return cls(architecture=meta["architecture"], config=config,
                   input=InputSpec.from_dict(json.loads(meta["input"])),
                   training=json.loads(meta.get("training", "{}")),
                   metrics=json.loads(meta.get("metrics", "{}")),
                   trained=json.loads(meta.get("trained", "false")))


# Architecture sizes a weights file may ask for, checked before anything is allocated: the paper's
# networks use 4 to 8 hidden channels and kernels of 7 or 9.
CONFIG_LIMITS = {"hidden": (1, 256), "kernel_size": (1, 63)}

# What one line may cost, so that a line of any valid width (up to codec.MAX_WIDTH) stays within
# a board's time and memory: multiply-adds per pixel (ScannerNet: 4,465; the limit is about 67x)
# and working bytes per pixel (ScannerNet: about 840; at 65,536 px the limit is 512 MB).
MAX_MACS_PER_PIXEL = 300_000
MAX_BYTES_PER_PIXEL = 8192
# No trained model of the zoo holds a weight above a few units; values near float32's limit
# overflow in one step or another, so that two correct steps would disagree.
MAX_ABS_WEIGHT = 1e4


def line_cost(architecture: str, config: dict, bands: int) -> tuple[int, int]:
    """(multiply-adds, working bytes) per pixel of one line of a streaming ScannerNet."""
    if architecture not in ("scannernet", "scannernet_small"):
        return 0, 0
    (f1, f2), k = config.get("hidden", ZOO[architecture].config["hidden"]), \
        config.get("kernel_size", ZOO[architecture].config["kernel_size"])
    macs = 4 * f1 * (bands + f1) * k + 4 * f2 * (f1 + f2) * k + f2
    return macs, 4 * ((bands + f1 + f2) * (k + 1) + 5 * (f1 + f2))


def check_budget(architecture: str, config: dict, bands: int) -> None:
    macs, nbytes = line_cost(architecture, config, bands)
    if macs > MAX_MACS_PER_PIXEL or nbytes > MAX_BYTES_PER_PIXEL:
        raise ValueError(f"{architecture} {config} costs {macs:,} multiply-adds and {nbytes:,} bytes per pixel; "
                         f"the on-board budget is {MAX_MACS_PER_PIXEL:,} and {MAX_BYTES_PER_PIXEL:,} "
                         "(so that a line of any valid width fits a board's time and memory)")


def check_config(architecture: str, config: dict) -> None:
    """Keys and types of an architecture's config; sizes within :data:`CONFIG_LIMITS`."""
    known = ZOO[architecture].config
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise ValueError(f"'config' has keys {unknown} that {architecture!r} does not take (it takes {sorted(known)})")
    for key, value in config.items():
        if key == "hidden":
            ok = (isinstance(value, tuple) and len(value) == 2
                  and all(type(v) is int and CONFIG_LIMITS[key][0] <= v <= CONFIG_LIMITS[key][1] for v in value))
            if not ok:
                raise ValueError(f"'config.hidden' must be two integers in {CONFIG_LIMITS[key]}, got {value!r}")
        elif key == "kernel_size":
            if not (type(value) is int and value % 2 == 1
                    and CONFIG_LIMITS[key][0] <= value <= CONFIG_LIMITS[key][1]):
                raise ValueError(f"'config.kernel_size' must be an odd integer in {CONFIG_LIMITS[key]}, got {value!r}")
        elif key == "t":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not -0.5 <= value <= 5.0:
                raise ValueError(f"'config.t' must be a reflectance in [-0.5, 5], got {value!r}")


def build_from_info(info: ModelInfo) -> "nn.Module":
    from .learning.models import build_model
    return build_model(info.architecture, in_channels=len(info.input.bands), **info.config)


def save_model(path: os.PathLike | str, model: "nn.Module", info: ModelInfo) -> None:
    from safetensors.torch import save_file
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=info.to_metadata()))


def read_weights(path: os.PathLike | str) -> tuple[ModelInfo, dict[str, np.ndarray]]:
    """A file's metadata and tensors (numpy), both validated, without building a model or
    importing torch.  Tensors are read only once the metadata says what they are for; for the
    streaming models every name and shape is checked against the architecture here."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(path, "no such file")
    if not path.is_file():
        raise WeightsError(path, "not a regular file (a folder, device or pipe cannot hold weights)")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(path, f"not a readable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise WeightsError(path, f"metadata 'format' is {meta.get('format')!r}, expected {FORMAT!r}")
    try:
        info = ModelInfo.from_metadata(meta)
    except KeyError as exc:
        raise WeightsError(path, f"bad metadata: missing {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise WeightsError(path, f"bad metadata: {exc}") from None
    if info.architecture not in ZOO:
        raise WeightsError(path, f"unknown architecture {info.architecture!r}; known: {', '.join(ZOO)}")
    try:
        check_config(info.architecture, info.config)
        check_budget(info.architecture, info.config, len(info.input.bands))
    except ValueError as exc:
        raise WeightsError(path, f"bad metadata: {exc}") from None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(path, f"not a readable safetensors file ({exc})") from None
    expected = tensor_shapes(info.architecture, info.config, len(info.input.bands))
    if expected is not None:
        check_tensors(path, info.architecture, tensors, expected)
    for name, t in tensors.items():
        if not np.issubdtype(t.dtype, np.floating):
            raise WeightsError(path, f"tensor {name!r} has dtype {t.dtype}, expected floating point")
        if not np.isfinite(t).all():
            raise WeightsError(path, f"tensor {name!r} holds NaN or Inf")
        if t.size and float(np.abs(t).max()) > MAX_ABS_WEIGHT:
            raise WeightsError(path, f"tensor {name!r} holds values up to {float(np.abs(t).max()):.3g}; "
                                     f"no trained model has weights beyond {MAX_ABS_WEIGHT:g}")
    return info, tensors


read_info = read_weights  # the name the tools have used


def check_tensors(path, architecture: str, tensors: dict, expected: dict[str, tuple[int, ...]]) -> None:
    """Every tensor the architecture needs, with its shape, and no other."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise WeightsError(path, f"tensors do not fit {architecture!r}: missing {missing}, unexpected {unexpected}")
    for name, t in tensors.items():
        if tuple(t.shape) != tuple(expected[name]):
            raise WeightsError(path, f"tensor {name!r} has shape {tuple(t.shape)}, "
                                     f"{architecture!r} needs {tuple(expected[name])}")


def load_model(path: os.PathLike | str, device: "torch.device | str" = "cpu") -> tuple["nn.Module", ModelInfo]:
    """Build the named architecture (torch) and load the tensors into it, checking every name and shape."""
    import torch
    info, arrays = read_weights(path)
    try:
        model = build_from_info(info)
    except (TypeError, ValueError) as exc:
        raise WeightsError(path, f"cannot build {info.architecture!r} from {info.config} ({exc})") from None
    check_tensors(path, info.architecture, arrays, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in arrays.items()})
    return model.to(device).eval(), info


def models_dir() -> Path:
    """Where shipped weights live: $SCANNERNET_MODELS_DIR, the ament share folder, or the source tree."""
    env = os.environ.get("SCANNERNET_MODELS_DIR")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent
    source = checkout / "models"
    if (checkout / "package.xml").is_file() and source.is_dir():  # a source checkout or editable install
        return source
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory("scannernet_ros")) / "models"
    except Exception:  # noqa: BLE001 - no ament index outside a ROS workspace
        return source


def shipped_models(folder: Path | None = None) -> list[str]:
    """Names of the shipped weights: the zoo's architectures that have them, then named variants
    of an architecture (``scannernet_swir``: ScannerNet on other bands), each ``<name>.safetensors``."""
    stems = {p.stem for p in (folder or models_dir()).glob("*.safetensors")}
    return [n for n in ZOO if n in stems] + sorted(stems - set(ZOO))


def resolve_model_path(model: str) -> Path:
    """A zoo or shipped name means the shipped weights of that name; anything else is a path."""
    if model in ZOO or (os.sep not in model and model in shipped_models()):
        path = models_dir() / f"{model}.safetensors"
        if not path.is_file():
            raise WeightsError(path, f"no shipped weights for {model!r}; train them with "
                                     f"`scannernet train --model {model}` or pass a path")
        return path
    return Path(model).expanduser()
