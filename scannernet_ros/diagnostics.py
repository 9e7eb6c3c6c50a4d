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

    WARN when compute is slower than the line rate, when lines wait in the subscription queue for
    more than ``behind_lines`` line periods (arrival to processing: stamps are not used, so a bag
    recorded years ago replays without a false alarm), when the recurrent state had to be reset
    because it turned non-finite, or when the middleware reported lost lines; ERROR when lines were
    rejected in the period.
    """

    def __init__(self, behind_lines: int = 20) -> None:
        self.behind_lines = behind_lines
        self.e2e_ms = Window()
        self.queue_ms = Window()   # middleware arrival -> callback start
        self.lost = 0              # lines the middleware reports lost (QoS message-lost event)
        self._last_out = 0
        self._last_rejected = 0
        self._last_nonfinite = 0
        self._last_lost = 0

    def report(self, core, period_s: float, model: str, device: str) -> Report:
        c = core.counters
        compute = core.compute_ms.summary()
        e2e = self.e2e_ms.summary()
        queue = self.queue_ms.summary()
        line_period_ms = core.line_period_ns / 1e6
        rate = (c.lines_out - self._last_out) / period_s if period_s > 0 else 0.0
        rtf = line_period_ms / compute["mean"] if compute["mean"] > 0 else float("nan")
        rejected = sum(c.rejected.values())
        new_rejections = rejected - self._last_rejected
        self._last_out, self._last_rejected = c.lines_out, rejected
        nonfinite = c.resets["nonfinite_state"]
        new_nonfinite, self._last_nonfinite = nonfinite - self._last_nonfinite, nonfinite
        new_lost, self._last_lost = self.lost - self._last_lost, self.lost
        values = {
            "lines in": str(c.lines_in), "lines out": str(c.lines_out),
            "rejected": str(rejected),
            **{f"rejected {k}": str(v) for k, v in sorted(c.rejected.items())},
            "dropped (stamp gaps)": str(c.dropped),
            "lost (middleware)": str(self.lost),
            "resets": str(sum(c.resets.values())),
            **{f"resets {k}": str(v) for k, v in sorted(c.resets.items())},
            "compute latency p50 ms": _ms(compute["p50"]),
            "compute latency p99 ms": _ms(compute["p99"]),
            "compute latency max ms": _ms(compute["max"]),
            "end-to-end latency p50 ms": _ms(e2e["p50"]),
            "end-to-end latency p99 ms": _ms(e2e["p99"]),
            "queue wait p99 ms": _ms(queue["p99"]),
            "lines per second": f"{rate:.1f}",
            "real-time factor": "nan" if math.isnan(rtf) else f"{rtf:.1f}",
            "line rate hz": f"{1e3 / line_period_ms:.1f}",
            "state since stamp ns": str(core.state_since_ns) if core.state_since_ns is not None else "none",
            "state lines": str(core.state_lines),
            "device": device, "model": model,
            "stepper": core.step_in_use(),
            "width": str(core.width or 0),
        }
        core.compute_ms.clear()
        self.e2e_ms.clear()
        self.queue_ms.clear()
        if new_rejections:
            return Report(ERROR, f"rejected {new_rejections} malformed lines", values)
        if new_nonfinite:
            return Report(WARN, f"recurrent state turned non-finite {new_nonfinite} times and was reset", values)
        if new_lost:
            return Report(WARN, f"the middleware lost {new_lost} lines", values)
        behind = (not math.isnan(rtf) and rtf < 1.0) or queue["p99"] > self.behind_lines * line_period_ms
        if behind:
            return Report(WARN, "falling behind the line rate", values)
        return Report(OK, "segmenting" if rate > 0 else "waiting for scanlines", values)

