"""The model zoo's names, default configurations and tensor layouts, without torch.

What the on-board path needs to know about a model before any tensor is touched: whether it runs
per line, which hyperparameters it takes, and which tensor names and shapes its weights must have.
The torch networks themselves live in :mod:`.models`, which builds its registry from this one.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    config: dict
    summary: str
    streams: bool   # runs one image row at a time


ZOO: dict[str, Entry] = {
    "scannernet": Entry({"hidden": (4, 8), "kernel_size": 9}, "ScannerNet: 2-layer ConvLSTM1d, F1=4, F2=8, k=9", True),
    "scannernet_small": Entry({"hidden": (4, 4), "kernel_size": 7},
                              "ScannerNet Small: 2-layer ConvLSTM1d, F1=4, F2=4, k=7", True),
    "baseline1d": Entry({}, "non-recurrent 1D baseline", True),
    "cfcn": Entry({}, "C-FCN (Bahl et al. 2019)", False),
    "cunetpp": Entry({}, "C-UNet++ (Bahl et al. 2019), additive skips", False),
    "threshold": Entry({"t": 0.26}, "reference: mean R, G, B reflectance > t, t fitted on training data", True),
}


# The streaming model with the best cross-validated per-scene IoU (README, "Shipped weights"):
# what the segmenter, the demo and the launch files run unless told otherwise.
DEFAULT_MODEL = "scannernet"


def runnable_per_line(models_dir=None) -> list[str]:
    """The models the segmenter can run here: shipped weights of a streaming architecture."""
    from .weights import WeightsError, read_weights, shipped_models
    from .weights import models_dir as shipped_dir
    folder = models_dir or shipped_dir()
    names = []
    for name in shipped_models(folder):
        if name in ZOO:
            streams = ZOO[name].streams
        else:
            try:
                streams = ZOO[read_weights(folder / f"{name}.safetensors")[0].architecture].streams
            except WeightsError:
                continue   # a broken variant is not offered; loading it by name says why
        if streams:
            names.append(name)
    return names


def tensor_shapes(architecture: str, config: dict, bands: int) -> dict[str, tuple[int, ...]] | None:
    """The tensors a streaming model's weights hold, by name; None for the whole-image models
    (their layouts are checked against the torch network when it is built)."""
    config = {**ZOO[architecture].config, **config}
    if architecture in ("scannernet", "scannernet_small"):
        (h1, h2), k = config["hidden"], config["kernel_size"]
        return {"cell1.gates.weight": (4 * h1, bands + h1, k), "cell1.gates.bias": (4 * h1,),
                "cell2.gates.weight": (4 * h2, h1 + h2, k), "cell2.gates.bias": (4 * h2,),
                "head.weight": (1, h2, 1), "head.bias": (1,)}
    if architecture == "baseline1d":
        return {"body.0.weight": (8, bands, 9), "body.0.bias": (8,), "body.2.weight": (16, 8, 9),
                "body.2.bias": (16,), "body.4.weight": (1, 16, 1), "body.4.bias": (1,)}
    if architecture == "threshold":
        return {}
    return None
