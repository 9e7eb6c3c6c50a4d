"""``scannernet export``: a streaming model's per-line step as ONNX, for the runtimes this package
does not ship (TensorRT on a Jetson, OpenVINO on a VPU, onnxruntime anywhere).

The graph is built from the weights file's arrays with ``onnx.helper`` (no torch, no tracing), so
it is the same arithmetic as the numpy steppers, op for op:

- input ``reflectance`` ``(1, bands, width)``: top-of-atmosphere reflectance of one line, bands in
  the order of the metadata's ``input.bands``; the graph standardises it with the weights' mean and
  std.  ``width`` is a dynamic dimension.
- output ``cloud_probability`` ``(1, width)``.
- ScannerNet: the recurrent state is explicit, ``h1, c1, h2, c2`` in, ``h1_out ... c2_out`` out,
  ``(1, channels, width)`` each; feed zeros at the first line of a scene and the outputs back after.

The ONNX metadata carries the weights file's metadata (architecture, config, input scaling), the
SHA-256 of the weights file and the SHA-256 of the graph's own initializers (its weights and
constants as stored), so :func:`verify` can tell an export that does not match its weights and an
export whose tensors were edited after it was written; it also compares outputs line by line.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..weights import ModelInfo, read_weights, resolve_model_path

FORMATS = ("onnx",)
FORMAT_TAG = "scannernet_ros.onnx_step/1"
OPSET = 17
STREAMING = ("scannernet", "scannernet_small", "baseline1d", "threshold")
TOLERANCE = 1e-5


class ExportError(ValueError):
    """An export that cannot be made or does not match its weights: one line for the user."""


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ExportError("exporting needs the onnx package (pip install onnx, or the package's 'export' extra)") from None
    return onnx


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("checking an export needs onnxruntime (pip install onnxruntime, or the 'export' extra)") \
            from None
    return onnxruntime


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_channels(info: ModelInfo) -> tuple[int, ...]:
    """Channels of h1, c1, h2, c2 (empty for the stateless models)."""
    if info.architecture in ("scannernet", "scannernet_small"):
        h1, h2 = info.config["hidden"]
        return (h1, h1, h2, h2)
    return ()


class _Graph:
    """Collects nodes and constants; names are made unique by a counter."""

    def __init__(self, onnx) -> None:
        self.onnx, self.nodes, self.constants, self.count = onnx, [], [], 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, hint: str, array: np.ndarray) -> str:
        name = self.name(hint)
        self.constants.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, kind: str, inputs: list[str], outputs: int | list[str] = 1, **attrs) -> list[str]:
        names = outputs if isinstance(outputs, list) else [self.name(kind.lower()) for _ in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(kind, inputs, names, **attrs))
        return names

    def conv(self, x: str, weight: np.ndarray, bias: np.ndarray, hint: str) -> str:
        k = weight.shape[2]
        return self.op("Conv", [x, self.const(f"{hint}_w", weight.astype(np.float32)),
                                self.const(f"{hint}_b", bias.astype(np.float32))],
                       kernel_shape=[k], pads=[k // 2, k // 2])[0]


def _cell(g: _Graph, x: str, h: str, c: str, weight: np.ndarray, bias: np.ndarray, hint: str,
          h_out: str, c_out: str) -> None:
    """One ConvLSTM1d layer: gates from [x; h], then c = f*c + i*g and h = o*tanh(c)."""
    z = g.conv(g.op("Concat", [x, h], axis=1)[0], weight, bias, hint)
    n = weight.shape[0] // 4
    i, f, o, cand = g.op("Split", [z, g.const("split", np.array([n] * 4, np.int64))], 4, axis=1)
    i, f, o = (g.op("Sigmoid", [t])[0] for t in (i, f, o))
    cand = g.op("Tanh", [cand])[0]
    g.op("Add", [g.op("Mul", [f, c])[0], g.op("Mul", [i, cand])[0]], [c_out])
    g.op("Mul", [o, g.op("Tanh", [c_out])[0]], [h_out])


def initializers_sha256(model) -> str:
    """SHA-256 over the graph's initializers (name, type, shape, raw values) in graph order."""
    from onnx import numpy_helper
    digest = hashlib.sha256()
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        digest.update(f"{tensor.name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def step_model(info: ModelInfo, tensors: dict[str, np.ndarray], weights_sha256: str):
    """The ONNX ModelProto of one line's step of a streaming model."""
    onnx = _onnx()
    arch = info.architecture
    if arch not in STREAMING:
        raise ExportError(f"{arch} segments whole images; only the streaming models ({', '.join(STREAMING)}) "
                          "export a per-line step")
    bands = len(info.input.bands)
    g = _Graph(onnx)
    mean = np.asarray(info.input.mean, np.float32).reshape(1, bands, 1)
    std = np.asarray(info.input.std, np.float32).reshape(1, bands, 1)
    x = g.op("Div", [g.op("Sub", ["reflectance", g.const("mean", mean)])[0], g.const("std", std)])[0]
    float_t = onnx.TensorProto.FLOAT
    inputs = [onnx.helper.make_tensor_value_info("reflectance", float_t, [1, bands, "width"])]
    outputs = [onnx.helper.make_tensor_value_info("cloud_probability", float_t, [1, "width"])]
    if arch in ("scannernet", "scannernet_small"):
        names = ("h1", "c1", "h2", "c2")
        for name, channels in zip(names, state_channels(info)):
            inputs.append(onnx.helper.make_tensor_value_info(name, float_t, [1, channels, "width"]))
            outputs.append(onnx.helper.make_tensor_value_info(f"{name}_out", float_t, [1, channels, "width"]))
        _cell(g, x, "h1", "c1", tensors["cell1.gates.weight"], tensors["cell1.gates.bias"], "cell1", "h1_out", "c1_out")
        _cell(g, "h1_out", "h2", "c2", tensors["cell2.gates.weight"], tensors["cell2.gates.bias"], "cell2",
              "h2_out", "c2_out")
        logits = g.conv("h2_out", tensors["head.weight"], tensors["head.bias"], "head")
    elif arch == "baseline1d":
        hidden = g.op("Relu", [g.conv(x, tensors["body.0.weight"], tensors["body.0.bias"], "conv0")])[0]
        hidden = g.op("Relu", [g.conv(hidden, tensors["body.2.weight"], tensors["body.2.bias"], "conv2")])[0]
        logits = g.conv(hidden, tensors["body.4.weight"], tensors["body.4.bias"], "head")
    else:  # threshold: (mean of R, G, B - t) * sharpness, as ThresholdStepper
        from ..stepper import ThresholdStepper
        rgb = g.op("Slice", [x, g.const("start", np.array([0], np.int64)), g.const("end", np.array([3], np.int64)),
                             g.const("axis", np.array([1], np.int64))])[0]
        mean_rgb = g.op("ReduceMean", [rgb], axes=[1], keepdims=1)[0]  # axes an attribute up to opset 17
        shifted = g.op("Sub", [mean_rgb, g.const("t", np.array(info.config.get("t", 0.26), np.float32))])[0]
        logits = g.op("Mul", [shifted, g.const("sharpness", np.array(ThresholdStepper.SHARPNESS, np.float32))])[0]
    prob = g.op("Sigmoid", [logits])[0]
    g.op("Squeeze", [prob, g.const("axes", np.array([1], np.int64))], ["cloud_probability"])
    graph = onnx.helper.make_graph(g.nodes, f"{arch}_line_step", inputs, outputs, initializer=g.constants)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   producer_name="scannernet_ros")
    model.ir_version = 8  # readable by the onnxruntime and TensorRT releases of the last years
    meta = {**info.to_metadata(), "export_format": FORMAT_TAG, "weights_sha256": weights_sha256,
            "initializers_sha256": initializers_sha256(model),
            "state": json.dumps(dict(zip(("h1", "c1", "h2", "c2"), state_channels(info))))}
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    return model


def export(model: str, out_dir: Path, fmt: str = "onnx") -> Path:
    """Write ``<out_dir>/<name>.onnx`` for a registry name or weights path; the path written."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    path = resolve_model_path(model)
    info, tensors = read_weights(path)
    proto = step_model(info, tensors, sha256(path))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{path.stem}.onnx"
    from ..atomic import atomic_write
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(proto.SerializeToString()))
    return target


class OnnxStep:
    """An exported step run by onnxruntime, with the state carried between lines as the steppers do."""

    def __init__(self, path: Path, providers: list[str] | None = None) -> None:
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for unreadable or invalid files
            raise ExportError(f"{path}: not a readable ONNX model ({str(exc).splitlines()[0]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("export_format") != FORMAT_TAG:
            raise ExportError(f"{path}: not a scannernet_ros export (export_format {meta.get('export_format')!r})")
        self.meta = meta
        try:
            self.info = ModelInfo.from_metadata(meta)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ExportError(f"{path}: not a scannernet_ros export (its metadata lacks or garbles {exc})") from None
        self.channels = state_channels(self.info)
        self.state: list[np.ndarray] | None = None

    def reset(self) -> None:
        self.state = None

    def __call__(self, reflectance: np.ndarray) -> np.ndarray:
        """``(bands, width)`` reflectance -> ``(width,)`` cloud probability."""
        width = reflectance.shape[1]
        feed = {"reflectance": np.ascontiguousarray(reflectance[None], np.float32)}
        if self.channels:
            if self.state is None or self.state[0].shape[2] != width:
                self.state = [np.zeros((1, c, width), np.float32) for c in self.channels]
            feed.update(zip(("h1", "c1", "h2", "c2"), self.state))
        out = self.session.run(None, feed)
        if self.channels:
            self.state = out[1:]
        return out[0][0]


def verify(onnx_path: Path, model: str, lines: int = 64, width: int = 96, seed: int = 0) -> float:
    """Check an export against a weights file: the same weights (SHA-256) and the same probabilities
    as the numpy stepper over ``lines`` random lines; the largest difference, or an ExportError."""
    from ..normalise import Normaliser
    from ..stepper import make_cpu_stepper
    weights = resolve_model_path(model)
    step = OnnxStep(onnx_path)
    if step.meta.get("weights_sha256") != sha256(weights):
        raise ExportError(f"{onnx_path} was exported from other weights than {weights} (SHA-256 differs); "
                          "export again")
    onnx = _onnx()
    try:
        stored = initializers_sha256(onnx.load(str(onnx_path)))
    except Exception as exc:  # noqa: BLE001 - onnx raises its own types for unreadable files
        raise ExportError(f"{onnx_path}: not a readable ONNX model ({str(exc).splitlines()[0]})") from None
    if step.meta.get("initializers_sha256") != stored:
        raise ExportError(f"{onnx_path}: its tensors were changed after export (the SHA-256 of its initializers "
                          "differs from the one recorded at export); export again")
    info, tensors = read_weights(weights)
    normalise = Normaliser(info.input)
    stepper = make_cpu_stepper(info.architecture, tensors, info.config, width, len(info.input.bands))
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(lines):
        refl = rng.uniform(0.0, 1.0, (len(info.input.bands), width)).astype(np.float32)
        expected = stepper.probabilities(normalise(refl, "float")).copy()
        got = step(refl)
        if not (np.isfinite(got).all() and np.isfinite(expected).all()):
            raise ExportError(f"{onnx_path} does not reproduce {weights}: non-finite probabilities "
                              f"({int((~np.isfinite(got)).sum())} in the export's output, "
                              f"{int((~np.isfinite(expected)).sum())} in the stepper's)")
        worst = max(worst, float(np.abs(got - expected).max()))
    if not worst <= TOLERANCE:
        raise ExportError(f"{onnx_path} does not reproduce {weights}: largest difference {worst:.2e} > {TOLERANCE:g}")
    return worst


def add_arguments(p) -> None:
    p.add_argument("models", nargs="*", default=list(STREAMING),
                   help="registry names or weights files (default: every shipped streaming model)")
    p.add_argument("--out", default="exports", help="folder for <model>.onnx")
    p.add_argument("--format", default="onnx", help=f"export format ({', '.join(FORMATS)})")
    p.add_argument("--check", action="store_true",
                   help="after writing, run each export in onnxruntime against the numpy stepper")
    p.add_argument("--verify", metavar="FILE.onnx",
                   help="write nothing; check FILE.onnx against the one model named (its weights and outputs)")


def run(args) -> int:
    if args.verify:
        if len(args.models) != 1:
            raise ExportError("--verify checks one export against one model: name exactly one")
        worst = verify(Path(args.verify), args.models[0])
        print(f"{args.verify}: matches {args.models[0]} (largest difference {worst:.1e})")
        return 0
    if args.format not in FORMATS:  # before any file is read or written
        raise ExportError(f"unknown export format {args.format!r}; known: {', '.join(FORMATS)}")
    if args.check:
        _onnxruntime()
    for model in args.models:
        target = export(model, Path(args.out), args.format)
        note = f" (checked: largest difference {verify(target, model):.1e})" if args.check else ""
        print(f"wrote {target}{note}")
    return 0
