"""LineSegmenter: the one object that turns scanlines into cloud probabilities.

The ROS node, the offline evaluator and the benchmarks all use it, so what is measured offline is
what flies.  It owns the model's recurrent state and decides when that state no longer describes
the ground under the sensor (width change, a gap in the stamps, time going backwards, a request).
"""
from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .camera import LANDSAT8_LINE_RATE_HZ  # noqa: F401 - the default line rate, re-exported
from .codec import MAX_WIDTH, ImageFormatError, Line, check_values, check_width, decode_line
from .normalise import Normaliser
from .stats import Window
from .stepper import KernelStepper, check_kind, make_cpu_stepper, set_kernel_threads
from .weights import ModelInfo, read_weights, resolve_model_path
from .zoo import ZOO

# A stamp jump longer than this many line periods is a new acquisition (or a broken clock), not
# lines lost on the way: it resets the state under its own reason and is not counted as dropped.
MAX_GAP_LINES = 1000


@dataclass
class Counters:
    """One account of every line a segmenter is offered, kept across model swaps and (in the node)
    across cleanup and configure: each line is in ``lines_out``, ``rejected`` or ``unanswered``
    once, and ``dropped`` counts the lines missing between stamps.

    ``dropped`` is an estimate that holds for stamps on the line schedule (``line_rate_hz``): a
    gap of n line periods counts n - 1 lines.  Stamps of another clock (wall-clock arrival times
    at another rate) make it meaningless; the segmenter's line rate must be the sensor's."""
    lines_in: int = 0          # lines offered, valid or not
    lines_out: int = 0         # probability lines produced
    dropped: int = 0           # lines missing between stamps (estimated from gaps; rejected lines excluded)
    rejected: Counter = field(default_factory=Counter)   # by reason
    resets: Counter = field(default_factory=Counter)     # by reason
    unanswered: Counter = field(default_factory=Counter)  # lines taken in but not answered, by reason (inactive, ...)
    last_stamp_ns: int | None = None   # the stamp clock the gaps are measured on

    def count_rejected(self, reason: str, stamp_ns: int | None, line_period_ns: int) -> None:
        """A line that cannot be used: counted once, as rejected (its stamp still moves the clock
        on, so it is not counted again as dropped when the next line arrives)."""
        self.lines_in += 1
        self.rejected[reason] += 1
        if self.last_stamp_ns is not None:
            self.move_clock(stamp_ns, line_period_ns)

    def count_unanswered(self, reason: str, stamp_ns: int | None, line_period_ns: int) -> None:
        """A valid line taken in but not answered (the node unconfigured or inactive)."""
        self.lines_in += 1
        self.unanswered[reason] += 1
        self.move_clock(stamp_ns, line_period_ns)

    def move_clock(self, stamp_ns: int | None, line_period_ns: int) -> None:
        """A line that is accounted for without being segmented moves the stamp clock on, so that
        the next one is not taken for the end of a gap."""
        last = self.last_stamp_ns
        if stamp_ns is not None and (last is None or 0 < stamp_ns - last <= MAX_GAP_LINES * line_period_ns):
            self.last_stamp_ns = stamp_ns


def device_name(device: str) -> str:
    """``cpu`` without torch; any other device is checked by torch (imported only then)."""
    if device == "cpu":
        return "cpu"
    from .learning.models import resolve_device
    return str(resolve_device(device))


def set_threads(n: int) -> None:
    """CPU threads for the model: the compiled step's split of wide lines, numpy's BLAS (and
    torch's, where it is loaded); 0 leaves the libraries' default (the compiled step: every CPU).

    One thread is the on-board setting: at these matrix sizes OpenBLAS on two threads was ten
    times slower than on one, and the compiled step splits only full-swath-wide lines."""
    set_kernel_threads(n if n > 0 else (os.cpu_count() or 1))
    if n <= 0:
        return
    from threadpoolctl import threadpool_limits
    threadpool_limits(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


class LineSegmenter:
    """Steps a streaming model once per line and keeps its state between lines.

    ``reset_gap_lines``: a stamp gap longer than this many line periods resets the state, because
    the recurrent memory then describes ground that is no longer adjacent; ``<= 0`` never resets
    on gaps (missing lines are still counted as dropped).
    """

    def __init__(self, model, info: ModelInfo, device="cpu",
                 line_rate_hz: float = LANDSAT8_LINE_RATE_HZ, reset_gap_lines: int = 10,
                 window: int = 4096, stepper: str = "auto") -> None:
        """``model``: the weights' tensors as numpy arrays (what :func:`read_weights` gives; the
        on-board CPU path, no torch), or a torch module.  ``stepper``: ``auto`` steps with the
        compiled kernel on the CPU (numpy where it is not built) and with :class:`FusedStepper` on
        CUDA; ``numpy`` keeps to numpy on the CPU; ``torch`` and ``plain`` (the model's own step)
        go through torch."""
        if not ZOO[info.architecture].streams:
            raise ValueError(f"{info.architecture} segments whole images only; it cannot run per line")
        if line_rate_hz <= 0:
            raise ValueError(f"line_rate_hz must be positive, got {line_rate_hz}")
        self.stepper_kind = check_kind(stepper)  # at construction, not at the first line
        if stepper == "numpy" and str(device) != "cpu":
            raise ValueError(f"stepper 'numpy' runs on the CPU only, not on {device!r}")
        self.device = str(device)
        self.info = info
        self.on_cpu = self.device == "cpu" and self.stepper_kind in ("auto", "numpy")
        if self.on_cpu:   # numpy: the tensors are all it needs
            self.tensors = model if isinstance(model, dict) else {
                k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
        else:             # torch: a module on the device
            import torch
            if isinstance(model, dict):
                from .weights import build_from_info
                module = build_from_info(info)
                module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.items()})
                model = module
            self.model = model.to(torch.device(self.device)).eval()
        self.bands = info.input.bands
        self.normalise = Normaliser(info.input)
        self.line_period_ns = int(1e9 / line_rate_hz)
        self.reset_gap_lines = reset_gap_lines
        self.counters = Counters()
        self.compute_ms = Window(window)
        self.width: int | None = None
        self.stepper = None  # holds the recurrent state; None = start from zeros at the next line
        self.state_since_ns: int | None = None  # stamp of the first line the current state has seen
        self.state_lines = 0                    # lines folded into the current state

    @classmethod
    def from_file(cls, model: str, device="cpu", **kwargs) -> "LineSegmenter":
        """Build from a registry name (shipped weights) or a path to a weights file; on the CPU
        the file is read with numpy and torch is never imported."""
        info, tensors = read_weights(resolve_model_path(model))
        return cls(tensors, info, device, **kwargs)

    def step_in_use(self) -> str:
        """Which step runs the lines, and why when it is not the compiled kernel (before any line:
        the step the first line will get)."""
        from .stepper import describe
        if self.stepper is not None:
            return describe(self.stepper)
        if not self.on_cpu:
            return f"torch on {self.device}"
        return describe(self._new_stepper(1))

    def _new_stepper(self, width: int):
        if self.on_cpu:
            return make_cpu_stepper(self.info.architecture, self.tensors, self.info.config, width, len(self.bands),
                                    compiled=self.stepper_kind == "auto")
        import torch

        from .learning.torch_stepper import make_torch_stepper
        kind = "torch" if self.stepper_kind == "auto" else self.stepper_kind
        return make_torch_stepper(self.model, width, torch.device(self.device), kind)

    def reset(self, reason: str = "request") -> None:
        """Forget the recurrent state; the next line starts from zeros."""
        self.stepper = None
        self.counters.resets[reason] += 1

    def reject(self, reason: str, stamp_ns: int | None = None) -> None:
        """Count a line that cannot be used.  Its stamp still moves the stamp clock on, so the
        line is counted once, as rejected, and not again as dropped when the next one arrives."""
        self.counters.count_rejected(reason, stamp_ns, self.line_period_ns)

    def skip(self, reason: str, stamp_ns: int | None) -> None:
        """Count a valid line that is not answered (the node inactive): once, under ``reason``.
        The state no longer describes adjacent ground, so the next answered line starts from zeros."""
        self.counters.count_unanswered(reason, stamp_ns, self.line_period_ns)
        if self.stepper is not None:
            self.reset(reason)

    def decode(self, msg, stamp_ns: int | None = None) -> Line:
        """Decode a one-row Image; a malformed one is counted under its reason, then re-raised."""
        try:
            return decode_line(msg)
        except ImageFormatError as err:
            self.reject(err.reason, stamp_ns)
            raise

    def process_image(self, msg, stamp_ns: int) -> np.ndarray:
        """Decode and segment a one-row Image."""
        return self.process(self.decode(msg, stamp_ns), stamp_ns)

    def process(self, line: Line, stamp_ns: int) -> np.ndarray:
        """One line in -> cloud probability per pixel ``(width,)`` float32, always finite.

        Samples outside the physical range are rejected (``out_of_range``).  If the state or the
        output ever turns non-finite, the state is reset (``resets nonfinite_state``) and the line
        is run again from zeros; a line that is non-finite even then is rejected, never published."""
        try:
            if not 0 < line.width <= MAX_WIDTH:
                raise ImageFormatError("width", f"line is {line.width} px wide; widths must be 1 to {MAX_WIDTH} px")
            samples = line.select(self.bands)
            check_values(samples, line.kind)
        except ImageFormatError as err:
            self.reject(err.reason, stamp_ns)
            raise
        self.counters.lines_in += 1
        self._check_continuity(line.width, stamp_ns)
        t0 = time.perf_counter()
        try:
            prob = self._step(samples, line.kind, stamp_ns)
        except MemoryError:
            self.stepper = None
            self.counters.rejected["out_of_memory"] += 1
            raise ImageFormatError("out_of_memory", f"no memory for a line of {line.width} px with this model") from None
        if prob is None:
            self.counters.rejected["nonfinite_output"] += 1
            raise ImageFormatError("nonfinite_output", "the model gives non-finite output on this line "
                                                       "even from a fresh state")
        self.compute_ms.add((time.perf_counter() - t0) * 1e3)
        self.state_lines += 1
        self.counters.lines_out += 1
        return prob

    def _step(self, samples: np.ndarray, kind: str, stamp_ns: int) -> np.ndarray | None:
        for _ in range(2):  # the second pass starts from zeros
            if self.stepper is None:
                self.stepper = self._new_stepper(samples.shape[1])
                self.state_since_ns, self.state_lines = stamp_ns, 0
            prob, finite = self._probabilities(samples, kind)
            if finite:
                return prob
            self.reset("nonfinite_state")
        return None

    def _probabilities(self, samples: np.ndarray, kind: str) -> tuple[np.ndarray, bool]:
        """One line's probabilities, and whether they and the state they leave are finite."""
        if isinstance(self.stepper, KernelStepper):  # standardises and checks inside its one call
            return self.stepper.step_samples(samples, *self.normalise.affine(kind))
        prob = self.stepper.probabilities(self.normalise(samples, kind, getattr(self.stepper, "input", None)))
        return prob, bool(np.isfinite(prob).all() and self.stepper.finite())

    def _check_continuity(self, width: int, stamp_ns: int) -> None:
        if self.width is not None and width != self.width and self.stepper is not None:
            self.reset("width_change")
        self.width = width
        last, self.counters.last_stamp_ns = self.counters.last_stamp_ns, stamp_ns
        if last is None:
            return
        gap = stamp_ns - last
        if gap < 0:
            self.reset("stamp_backwards")
            return
        if gap > MAX_GAP_LINES * self.line_period_ns:
            self.reset("stamp_jump")
            return
        missing = round(gap / self.line_period_ns) - 1
        if missing > 0:
            self.counters.dropped += missing
            if 0 < self.reset_gap_lines < gap / self.line_period_ns:
                self.reset("stamp_gap")

    def segment_image(self, samples: np.ndarray, kind: str, first_stamp_ns: int = 0) -> np.ndarray:
        """Stream a whole ``(bands, rows, width)`` image line by line, as the node would see it."""
        check_width(samples.shape[2], "image")
        out = np.empty(samples.shape[1:], np.float32)
        for r in range(samples.shape[1]):
            line = Line(samples[:, r], self.bands, kind)
            out[r] = self.process(line, first_stamp_ns + r * self.line_period_ns)
        return out
