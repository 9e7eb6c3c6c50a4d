"""What a node reports on /diagnostics, computed without ROS so it can be tested alone.

Levels use diagnostic_msgs/DiagnosticStatus values: OK 0, WARN 1, ERROR 2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .stats import Window

OK, WARN, ERROR = 0, 1, 2


@dataclass
class Report:
    level: int
    message: str
    values: dict[str, str] = field(default_factory=dict)


def _ms(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.3f}"


class SegmenterReporter:
    """Turns a LineSegmenter's counters and windows into one status per reporting period.

    WARN when compute is slower than the line rate or the backlog grows (end-to-end p99 above
    ``behind_lines`` line periods); ERROR when lines were rejected in the period.
    """

    def __init__(self, behind_lines: int = 20) -> None:
        self.behind_lines = behind_lines
        self.e2e_ms = Window()
        self._last_out = 0
        self._last_rejected = 0

    def report(self, core, period_s: float, model: str, device: str) -> Report:
        c = core.counters
        compute = core.compute_ms.summary()
        e2e = self.e2e_ms.summary()
        line_period_ms = core.line_period_ns / 1e6
        rate = (c.lines_out - self._last_out) / period_s if period_s > 0 else 0.0
        rtf = line_period_ms / compute["mean"] if compute["mean"] > 0 else float("nan")
        rejected = sum(c.rejected.values())
        new_rejections = rejected - self._last_rejected
        self._last_out, self._last_rejected = c.lines_out, rejected
        values = {
            "lines in": str(c.lines_in), "lines out": str(c.lines_out),
            "rejected": str(rejected),
            **{f"rejected {k}": str(v) for k, v in sorted(c.rejected.items())},
            "dropped (stamp gaps)": str(c.dropped),
            "resets": str(sum(c.resets.values())),
            **{f"resets {k}": str(v) for k, v in sorted(c.resets.items())},
            "compute latency p50 ms": _ms(compute["p50"]),
            "compute latency p99 ms": _ms(compute["p99"]),
            "compute latency max ms": _ms(compute["max"]),
            "end-to-end latency p50 ms": _ms(e2e["p50"]),
            "end-to-end latency p99 ms": _ms(e2e["p99"]),
            "lines per second": f"{rate:.1f}",
            "real-time factor": "nan" if math.isnan(rtf) else f"{rtf:.1f}",
            "line rate hz": f"{1e3 / line_period_ms:.1f}",
            "state since stamp ns": str(core.state_since_ns) if core.state_since_ns is not None else "none",
            "state lines": str(core.state_lines),
            "device": device, "model": model,
            "width": str(core.width or 0),
        }
        core.compute_ms.clear()
        self.e2e_ms.clear()
        if new_rejections:
            return Report(ERROR, f"rejected {new_rejections} malformed lines", values)
        behind = (not math.isnan(rtf) and rtf < 1.0) or e2e["p99"] > self.behind_lines * line_period_ms
        if behind:
            return Report(WARN, "falling behind the line rate", values)
        return Report(OK, "segmenting" if rate > 0 else "waiting for scanlines", values)

