"""Windowed statistics for diagnostics: bounded memory however long a node runs."""
from __future__ import annotations

from collections import deque

import numpy as np


class Window:
    """The last ``size`` samples since the last ``clear``; percentiles on demand."""

    def __init__(self, size: int = 4096) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._values.append(value)

    def clear(self) -> None:
        self._values.clear()

    def __len__(self) -> int:
        return len(self._values)

    def summary(self) -> dict[str, float]:
        """p50, p99, max and mean; NaN when the window is empty."""
        if not self._values:
            return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "mean": float("nan")}
        a = np.fromiter(self._values, float, len(self._values))
        p50, p99 = np.percentile(a, (50, 99))
        return {"p50": float(p50), "p99": float(p99), "max": float(a.max()), "mean": float(a.mean())}
