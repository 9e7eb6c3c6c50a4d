"""``scannernet bench``: the paper's Tables 2 and 4 on this machine, full-swath throughput, and the
pipeline end to end over ROS 2.  Prints Markdown tables and writes them with JSON to ``--out``.

Timing protocol of the paper's Table 4: each test runs ``runs`` times in a row, the first 10 are
discarded, the mean (and p50/p99) of the rest is reported.  ScannerNet's latency is one line
(the time to the first mask line), the other networks' a whole 384x384 image.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .tables import markdown_table
from ..codec import Line
from ..learning.memory import PAPER_TABLE2_MB, torchinfo_mb
from ..learning.models import REGISTRY, build_model, count_parameters
from ..streaming import LANDSAT8_LINE_RATE_HZ, LineSegmenter, set_threads
from ..weights import ModelInfo

SIZE = 384
PARTS = ("memory", "latency", "step", "swath", "ros", "predict")
SWATH = 6916  # Landsat 8 OLI pixels per line
PAPER_TABLE4_MS = {"cunetpp": (638.6, 27.9), "cfcn": (296.1, 11.1), "scannernet": (91.5, 4.6),
                   "scannernet_small": (80.3, 4.5)}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} logical CPUs{gpu}; torch {torch.__version__}, Python {platform.python_version()}"


def _calls(fn, runs: int, sync=lambda: None, pause_s: float = 0.0, spin: bool = False) -> list[float]:
    """``runs`` timed calls of ``fn`` in ms.  With ``pause_s``, each call comes that long after the
    last one ended, as lines do from a sensor; with ``spin`` the pause is a busy wait (a diagnosis,
    not a mode)."""
    times = []
    for _ in range(runs):
        if pause_s and spin:
            end = time.perf_counter() + pause_s
            while time.perf_counter() < end:
                pass
        elif pause_s:
            time.sleep(pause_s)
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _summary(times: list[float]) -> dict[str, float]:
    t = np.asarray(times)
    return {"mean": float(t.mean()), "p50": float(np.percentile(t, 50)), "p99": float(np.percentile(t, 99))}


def timed(fn, runs: int, discard: int = 10, sync=lambda: None, pause_s: float = 0.0,
          spin: bool = False) -> dict[str, float]:
    """Table 4 protocol: ``runs`` calls in a row, the first ``discard`` dropped; ms."""
    return _summary(_calls(fn, runs, sync, pause_s, spin)[discard:])


TURNS, TURN_DISCARD = 10, 2


def timed_in_turns(cases: list[tuple], runs: int, turns: int = TURNS,
                   discard: int = TURN_DISCARD) -> list[dict[str, float]]:
    """Several ways of running a line timed in turns, so that this VM's drift over minutes slows
    them alike and the ratios between them hold: each case ``(fn, options)`` makes ``runs / turns``
    calls per turn (``options`` as :func:`_calls` takes them, plus ``before``, run untimed before
    each turn), the first ``discard`` of each turn dropped as the warm-up after another case."""
    per = max(runs // turns, discard + 1)
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(turns):
        for (fn, options), kept in zip(cases, times):
            options = dict(options)
            options.pop("before", lambda: None)()
            kept.extend(_calls(fn, per, **options)[discard:])
    return [_summary(t) for t in times]


def _sync(device: torch.device):
    """What makes a timed call wait for the device: CUDA kernels run asynchronously."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def _segmenter(name: str, device: torch.device, stepper: str = "auto") -> LineSegmenter:
    torch.manual_seed(0)
    return LineSegmenter(build_model(name), ModelInfo(name), device, reset_gap_lines=0, stepper=stepper)


def _line(width: int, seed: int = 0) -> Line:
    dn = np.random.default_rng(seed).integers(6000, 40000, (3, width), dtype=np.uint16)
    return Line(dn, ("red", "green", "blue"), "uint16")


def line_latency(name: str, device: torch.device, runs: int, width: int = SIZE, stepper: str = "auto",
                 pause_s: float = 0.0) -> dict:
    """Time to the first mask line: one LineSegmenter.process from uint16 samples to probabilities."""
    seg = _segmenter(name, device, stepper)
    line = _line(width)
    stamp = iter(range(0, 1 << 62, seg.line_period_ns))
    return timed(lambda: seg.process(line, next(stamp)), runs, sync=_sync(device), pause_s=pause_s)


def step_latency(name: str, device: torch.device, runs: int, width: int = SIZE) -> dict:
    """The model's share of a line alone: normalised input in, probabilities out (no decoding,
    band selection, normalisation or bookkeeping)."""
    seg = _segmenter(name, device)
    line = _line(width)
    seg.process(line, 0)
    x = seg.normalise(line.select(seg.bands), line.kind)
    return timed(lambda: seg.stepper.probabilities(x), runs, sync=_sync(device))


def image_latency(name: str, device: torch.device, runs: int) -> dict:
    torch.manual_seed(0)
    net = build_model(name).to(device).eval()
    x = torch.randn(1, 3, SIZE, SIZE, device=device)
    with torch.inference_mode():
        return timed(lambda: net(x), runs, sync=_sync(device))


# -- 1. memory -------------------------------------------------------------------------------

_PEAK = """
import sys, torch, numpy as np
torch.set_num_threads(1)
from scannernet_ros.learning.models import build_model
from scannernet_ros.streaming import LineSegmenter
from scannernet_ros.weights import ModelInfo
from scannernet_ros.codec import Line
name = sys.argv[1]
net = build_model(name).eval()
rows = np.random.default_rng(0).integers(6000, 40000, (3, 384, 384), dtype=np.uint16)
x = torch.randn(1, 3, 384, 384)
with torch.inference_mode():
    if net.streams:
        seg = LineSegmenter(net, ModelInfo(name), reset_gap_lines=0)
        seg.process(Line(rows[:, 0], ("red", "green", "blue"), "uint16"), 0)
    else:
        net(x[:, :, :8, :8])
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1])
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
    before = status("VmHWM")
    if net.streams:
        for r in range(384):
            seg.process(Line(rows[:, r], ("red", "green", "blue"), "uint16"), (r + 1) * seg.line_period_ns)
    else:
        net(x)
    after = status("VmHWM")
print((after - before) / 1024)
"""


def measured_peak_mb(name: str) -> float:
    """Peak RSS growth (Linux VmHWM, reset just before) of a fresh process during one 384x384 image,
    streamed line by line for the streaming models."""
    out = subprocess.run([sys.executable, "-c", _PEAK, name], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def memory_table() -> tuple[list, list]:
    rows = [("model", "parameters", "torchinfo MB (this run)", "paper Table 2 MB", "measured peak RSS growth MB")]
    data = []
    for name in PAPER_TABLE2_MB:  # the paper's networks (the threshold reference holds no tensors)
        mb, peak = torchinfo_mb(name), measured_peak_mb(name)
        data.append({"model": name, "parameters": count_parameters(build_model(name)), "torchinfo_mb": mb,
                     "paper_mb": PAPER_TABLE2_MB[name], "peak_rss_mb": peak})
        rows.append((name, f"{data[-1]['parameters']:,}", f"{mb:.2f}", f"{PAPER_TABLE2_MB[name]:.2f}", f"{peak:.2f}"))
    return rows, data


# -- 2. latency ------------------------------------------------------------------------------

def latency_table(runs: int) -> tuple[list, list]:
    devices = [("cpu", 1), ("cpu", os.cpu_count() or 1)]
    if torch.cuda.is_available():
        devices.append(("cuda", None))
    rows = [("model", "unit", "device", "threads", "mean ms", "p50 ms", "p99 ms", "paper (Jetson Nano) ms")]
    data = []
    for dev, threads in devices:
        if threads:
            set_threads(threads)
        device = torch.device(dev)
        cases = [(n, "line", lambda n=n: line_latency(n, device, runs)) for n in ("scannernet", "scannernet_small", "baseline1d")]
        cases.append(("scannernet (model step only)", "line", lambda: step_latency("scannernet", device, runs)))
        # back to back, a line's buffers and code stay in cache; a node waits a line period between
        # lines and meets them colder
        cases.append(("scannernet (one line per 4.4 ms)", "line",
                      lambda: line_latency("scannernet", device, runs, pause_s=1 / LANDSAT8_LINE_RATE_HZ)))
        cases += [(f"scannernet ({label})", "line", lambda kind=kind: line_latency("scannernet", device, runs, stepper=kind))
                  for kind, label in (("torch", "torch fused step"), ("plain", "plain eager step"))
                  if not (dev == "cuda" and kind == "torch")]  # on CUDA the torch step is the default
        cases += [(n, "image", lambda n=n: image_latency(n, device, runs)) for n in ("cfcn", "cunetpp", "baseline1d")]
        for name, unit, fn in cases:
            t = fn()
            paper = PAPER_TABLE4_MS.get(name)  # the paper's unit: a line for ScannerNet, an image otherwise
            ref = f"{paper[0 if dev == 'cpu' else 1]}" if paper else ""
            data.append({"model": name, "unit": unit, "device": dev, "threads": threads, **t})
            rows.append((name, f"{unit} ({SIZE} px)" if unit == "line" else f"image {SIZE}x{SIZE}", dev,
                         str(threads or "-"), f"{t['mean']:.4f}", f"{t['p50']:.4f}", f"{t['p99']:.4f}", ref))
    set_threads(1)
    return rows, data


# -- 3. the model step against its floor ----------------------------------------------------

def _ms(t: dict) -> str:
    return f"{t['p50'] * 1e3:.1f}"


def _gate_gemms(stepper) -> Callable[[], None]:
    """The two gate GEMMs of a numpy ScannerNet step (after one line has filled its columns) and
    nothing else: the floor of any step that does its multiply-adds through BLAS."""
    convs = (stepper.cell1.conv, stepper.cell2.conv)

    def run() -> None:
        for conv in convs:
            np.dot(conv.w, conv.all_cols, out=conv.out)
    return run


def step_table(runs: int, model: str = "scannernet", width: int = SIZE) -> tuple[list, list]:
    """One line of the shipped model, one thread, every way this machine can run it, in one run:
    the two gate GEMMs alone (the floor: the same multiply-adds, nothing else), plain torch, the
    exported step in onnxruntime, the compiled kernel (the default) and the numpy step back to
    back and paced at the line rate, and the whole LineSegmenter.process (decode, checks,
    normalisation, step) paced likewise.  A trivial numpy call, paced, shows what a line period
    of idling costs any code on this machine, ours or not."""
    from ..normalise import Normaliser, to_reflectance
    from ..stepper import CpuStepper, KernelStepper
    from ..learning.torch_stepper import make_torch_stepper
    from ..weights import load_model, read_weights, resolve_model_path
    set_threads(1)
    path = resolve_model_path(model)
    info, tensors = read_weights(path)
    stepper = CpuStepper(tensors, width)
    line = _line(width)
    x = Normaliser(info.input)(line.samples.astype(np.float32), line.kind).copy()
    stepper.probabilities(x)
    gemms = _gate_gemms(stepper)
    net, _ = load_model(path)
    plain = make_torch_stepper(net, width, torch.device("cpu"), "plain")
    fused = make_torch_stepper(net, width, torch.device("cpu"), "torch")
    seg = LineSegmenter.from_file(str(path), reset_gap_lines=0)
    stamps = iter(range(0, 1 << 62, seg.line_period_ns))
    pause = 1.0 / LANDSAT8_LINE_RATE_HZ
    tiny = np.zeros(4, np.float32)
    paced, busy = {"pause_s": pause}, {"pause_s": pause, "spin": True}
    cases = [("GEMM floor: the two gate GEMMs alone (numpy BLAS)", gemms, {}),
             ("torch, the model's own step (eager)", lambda: plain.probabilities(x), {}),
             ("torch, fused step on preallocated tensors", lambda: fused.probabilities(x), {})]
    try:
        from .export import OnnxStep, export
        with tempfile.TemporaryDirectory() as folder:
            onnx_step = OnnxStep(export(str(path), Path(folder)))
        refl = to_reflectance(line.samples, line.kind, info.input)
        cases.append(("onnxruntime, the exported step (CPU provider, 1 thread)", lambda: onnx_step(refl), {}))
    except ValueError as exc:  # ExportError: onnx or onnxruntime not installed
        print(f"onnxruntime row left out: {exc}")
    steps = [("numpy step (BLAS)", stepper)]
    if KernelStepper.fits(tensors):
        steps.insert(0, ("compiled kernel (this package's default)", KernelStepper(tensors, width)))
    else:
        print("compiled kernel rows left out: scannernet_ros._linestep is not built")
    for label, step in steps:
        run = lambda step=step: step.probabilities(x)  # noqa: E731
        cases += [(f"{label}, back to back", run, {}),
                  (f"{label}, one line per {pause * 1e3:.1f} ms (paced)", run, paced),
                  (f"{label}, paced, the pause a busy wait", run, busy)]
    process = lambda: seg.process(line, next(stamps))  # noqa: E731
    cases += [("LineSegmenter.process (uint16 line in), back to back", process, {}),
              (f"LineSegmenter.process, one line per {pause * 1e3:.1f} ms (paced)", process, paced),
              (f"for scale: np.add on 4 floats, one call per {pause * 1e3:.1f} ms",
               lambda: np.add(tiny, 1.0, out=tiny), paced)]
    stats = timed_in_turns([(fn, options) for _, fn, options in cases], runs)
    data = [{"case": name, **t} for (name, _, _), t in zip(cases, stats)]
    floor = data[0]["p50"]
    rows = [("way to run one line", "p50 us", "mean us", "p99 us", "p50 / GEMM floor")]
    for d in data:
        d["ratio_to_floor"] = d["p50"] / floor
        rows.append((d["case"], _ms(d), f"{d['mean'] * 1e3:.1f}", f"{d['p99'] * 1e3:.1f}", f"{d['ratio_to_floor']:.2f}x"))
    return rows, data


# -- 4. full swath ---------------------------------------------------------------------------

def swath_table(lines: int) -> tuple[list, list]:
    """Lines per second at the full Landsat 8 swath: LineSegmenter.process with each CPU stepper on
    one thread, the compiled step on every CPU, and the two gate GEMMs alone (one thread), which
    bound any step that does its multiply-adds through BLAS; all timed in turns."""
    from ..stepper import CpuStepper
    rows = [("model", "device", "stepper", "threads", "pixels/line", "lines/s", "real-time factor vs 225 lines/s")]
    data = []
    set_threads(1)
    cpus = os.cpu_count() or 1
    cases = [(name, "cpu", "auto", 1) for name in ("scannernet", "scannernet_small")] + [("scannernet", "cpu", "numpy", 1)]
    if cpus > 1:  # num_threads: the compiled step splits a line this wide over the threads
        cases.append(("scannernet", "cpu", "auto", cpus))
    cases += [(name, "cuda", "auto", None) for name in ("scannernet", "scannernet_small") if torch.cuda.is_available()]
    runs, specs = [], []
    for name, dev, kind, threads in cases:
        seg = _segmenter(name, torch.device(dev), kind)
        line, stamps = _line(SWATH), iter(range(0, 1 << 62, seg.line_period_ns))
        seg.process(line, next(stamps))   # builds the stepper, whose class names the row
        runs.append((lambda seg=seg, line=line, stamps=stamps: seg.process(line, next(stamps)),
                     {"sync": _sync(torch.device(dev)), "before": lambda n=threads or 1: set_threads(n)}))
        specs.append((name, name, dev, type(seg.stepper).__name__, threads))
    floor = CpuStepper(_segmenter("scannernet", torch.device("cpu"), "numpy").tensors, SWATH)
    floor.probabilities(np.zeros((3, SWATH), np.float32))
    runs.append((_gate_gemms(floor), {"before": lambda: set_threads(1)}))
    specs.append(("scannernet: the two gate GEMMs alone", "scannernet", "cpu", "GEMM floor", 1))
    for (row, name, dev, label, threads), t in zip(specs, timed_in_turns(runs, lines + 10)):
        rate = 1e3 / t["mean"]
        data.append({"model": name, "device": dev, "stepper": label, "threads": threads, "lines_per_s": rate,
                     "rtf": rate / LANDSAT8_LINE_RATE_HZ})
        rows.append((row, dev, label, str(threads or "-"), f"{SWATH:,}", f"{rate:.0f}",
                     f"{rate / LANDSAT8_LINE_RATE_HZ:.2f}x"))
    set_threads(1)
    return rows, data


# -- 5./6. end to end over ROS 2 --------------------------------------------------------------

def ros_runs(lines: int, long_lines: int, weights: Path) -> tuple[list[tuple[str, list]], dict]:
    """The ROS 2 tables (title, rows) and their data."""
    from .bench_ros import SEGMENTER_REPORT_S, end_to_end, rss_over_length, start_to_first_mask, udp_floor
    from ..weights import resolve_model_path
    from ..zoo import DEFAULT_MODEL
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    rows = [("width", "camera rate", "lines", "received", "lost", "dup/out of order",
             "stamp->mask p50 ms", "p99 ms", "max ms", "lines/s", "in segmenter: stamp->receive p50 ms",
             "model p50 ms")]
    data = []
    for width in (SIZE, SWATH):
        for rate in (LANDSAT8_LINE_RATE_HZ, 0.0):
            r = end_to_end(weights, width, rate, lines)
            data.append(r)
            seen = r["segmenter"]
            rows.append((f"{width:,}", f"{rate:.0f} Hz" if rate else "max (lossless)", str(lines), str(r["received"]),
                         str(r["lost"]), str(r["disorder"]), *(fmt(r["latency_ms"][k]) for k in ("p50", "p99", "max")),
                         f"{r['lines_per_s']:.0f}", fmt(seen["receive_p50_ms"] if rate else None),
                         fmt(seen["compute_p50_ms"])))
    hop_rows = [("transport", "width", "camera rate", "lines", "received", "due->receive p50 ms", "p99 ms", "max ms")]
    for width in (SIZE, SWATH):
        for name, r in (("rclpy, camera -> observer", end_to_end(None, width, LANDSAT8_LINE_RATE_HZ, lines)),
                        ("loopback UDP socket, no middleware", udp_floor(width, LANDSAT8_LINE_RATE_HZ, lines))):
            data.append(r)
            hop_rows.append((name, f"{width:,}", f"{LANDSAT8_LINE_RATE_HZ:.0f} Hz", str(lines), str(r["received"]),
                             *(fmt(r["latency_ms"][k]) for k in ("p50", "p99", "max"))))
    rss = [rss_over_length(weights, long_lines, rate) for rate in (LANDSAT8_LINE_RATE_HZ, 0.0)]
    rss_rows = [("camera rate", "received", "segmenter RSS after 1,000 lines MB", f"after {long_lines // 2:,} lines MB",
                 f"after {long_lines:,} lines MB", "growth 1,000 -> end MB", "growth second half MB",
                 "libtorch mapped")]
    for r in rss:
        rss_rows.append((f"{r['rate_hz']:.0f} Hz" if r["rate_hz"] else "max (lossless)", f"{r['received']:,}",
                         f"{r['rss_1000_mb']:.1f}", f"{r['rss_half_mb']:.1f}", f"{r['rss_end_mb']:.1f}",
                         f"{r['rss_end_mb'] - r['rss_1000_mb']:.2f}", f"{r['rss_end_mb'] - r['rss_half_mb']:.2f}",
                         "yes" if r["libtorch_mapped"] else "no"))
    start = start_to_first_mask(resolve_model_path(DEFAULT_MODEL))
    start_rows = [("model", "runs", "answered", "median s", "each run s"),
                  (DEFAULT_MODEL, str(start["runs"]), str(start["answered"]), fmt(start["median_s"]),
                   ", ".join(f"{v:.2f}" for v in start["seconds"]))]
    return ([("End to end over ROS 2 (camera, segmenter and observer in separate processes, reliable QoS; "
              f"the last two columns: medians over the segmenter's own {SEGMENTER_REPORT_S:g} s diagnostics)", rows),
             ("One hop, no model: the camera's schedule to a second process", hop_rows),
             ("Segmenter memory over scene length", rss_rows),
             ("Start-up: segmenter executable started -> first mask line received (CPU, shipped weights)",
              start_rows)], {"end_to_end": data, "rss": rss, "start_to_first_mask": start})


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    set_threads(1)
    report = {"machine": machine(), "command": "scannernet bench " + " ".join(sys.argv[2:])}
    md = [f"Machine: {report['machine']}", f"Command: `{report['command']}`", ""]

    def section(title: str, rows: list) -> None:
        text = markdown_table(rows)
        print(f"\n## {title}\n\n{text}", flush=True)
        md.extend([f"## {title}", "", text, ""])

    parts = set(args.parts.split(","))
    unknown = parts - set(PARTS)
    if unknown:
        raise ValueError(f"--parts: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    if "memory" in parts:
        rows, report["memory"] = memory_table()
        section("Memory (paper Table 2: torchinfo forward pass, one line or one 384x384 image)", rows)
    if "latency" in parts:
        rows, report["latency"] = latency_table(args.runs)
        section(f"Latency (paper Table 4 protocol: {args.runs} runs, first 10 discarded)", rows)
        cpu1 = {(d["model"], d["unit"]): d["mean"] for d in report["latency"] if d["device"] == "cpu" and d["threads"] == 1}
        ratio = cpu1[("cfcn", "image")] / cpu1[("scannernet", "line")]
        small_ratio = cpu1[("cfcn", "image")] / cpu1[("scannernet_small", "line")]
        report["first_line_speedup_vs_cfcn"] = {"scannernet": ratio, "scannernet_small": small_ratio}
        text = (f"C-FCN whole image / first mask line, CPU, 1 thread: ScannerNet {ratio:.0f}x, "
                f"ScannerNet Small {small_ratio:.0f}x (the paper's Jetson figure for Small vs C-FCN: 3.7x)")
        print("\n" + text)
        md.extend([text, ""])
    if "step" in parts:
        runs = max(args.runs, 1000)
        rows, report["step"] = step_table(runs)
        section(f"The model step against its floor ({SIZE} px, one thread, shipped scannernet, p50 over "
                f"{runs - TURNS * TURN_DISCARD} lines per row, the rows timed in {TURNS} turns)", rows)
    if "swath" in parts:
        rows, report["swath"] = swath_table(args.swath_lines)
        section(f"Throughput at full Landsat 8 swath ({SWATH:,} px/line, the rows timed in {TURNS} turns)", rows)
    if "ros" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            from ..weights import save_model
            weights = Path(tmp) / "scannernet.safetensors"
            torch.manual_seed(0)
            save_model(weights, build_model("scannernet"), ModelInfo("scannernet", dict(REGISTRY["scannernet"].config)))
            tables, data = ros_runs(args.ros_lines, args.long_lines, weights)
        report.update(data)
        for title, rows in tables:
            section(title, rows)
    if "predict" in parts:
        from .predict import table as predicted
        report["predict"], text = predicted()
        print(f"\n## Predicted on other CPUs (llvm-mca)\n\n{text}", flush=True)
        md.extend(["## Predicted on other CPUs (llvm-mca)", "", text, ""])
    suffix = "" if parts == set(PARTS) else "_" + "_".join(sorted(parts))
    (out / f"bench{suffix}.json").write_text(json.dumps(report, indent=1))
    (out / f"bench{suffix}.md").write_text("\n".join(md))
    print(f"\nwrote {out}/bench{suffix}.md and .json")
    return 0
