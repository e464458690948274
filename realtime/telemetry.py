"""Latency telemetry of the live loop: percentiles over a whole run in constant memory.

:class:`LatencyStats` keeps every value in a log-spaced histogram (2% wide bins from
10 microseconds to 100 s, so a percentile is known to within 2% however long the run)
plus the exact maximum, mean and the last ``recent`` values (exact percentiles of the
recent past, for a live display). Memory does not grow with the number of decisions.
"""

from __future__ import annotations

import math

import numpy as np

_LO, _HI, _RATIO = 1e-5, 100.0, 1.02


class LatencyStats:
    """Streaming percentiles of durations in seconds (reported in milliseconds)."""

    def __init__(self, recent: int = 1000):
        self._edges = _LO * _RATIO ** np.arange(int(math.ceil(math.log(_HI / _LO) / math.log(_RATIO))) + 1)
        self._counts = np.zeros(len(self._edges) + 1, dtype=np.int64)
        self._recent = np.zeros(recent)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        self._counts[np.searchsorted(self._edges, seconds)] += 1
        self._recent[self.count % len(self._recent)] = seconds
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100) over the whole run, in seconds (NaN when empty)."""
        if self.count == 0:
            return float("nan")
        rank = max(1, int(math.ceil(q / 100.0 * self.count)))
        i = int(np.searchsorted(np.cumsum(self._counts), rank))
        if i == 0:
            return min(_LO, self.max)
        upper = self._edges[i] if i < len(self._edges) else self.max
        return float(min(math.sqrt(self._edges[i - 1] * upper), self.max))  # bin centre (geometric)

    def recent_percentile(self, q: float) -> float:
        """Exact ``q``-th percentile of the last ``recent`` values, in seconds."""
        n = min(self.count, len(self._recent))
        return float(np.percentile(self._recent[:n], q)) if n else float("nan")

    def summary(self, prefix: str = "latency") -> dict:
        """``{prefix_p50_ms, _p95_ms, _p99_ms, _p999_ms (p99.9), _max_ms, _mean_ms}`` (NaN when empty)."""
        ms = 1e3
        return {
            f"{prefix}_p50_ms": self.percentile(50) * ms,
            f"{prefix}_p95_ms": self.percentile(95) * ms,
            f"{prefix}_p99_ms": self.percentile(99) * ms,
            f"{prefix}_p999_ms": self.percentile(99.9) * ms,
            f"{prefix}_max_ms": (self.max if self.count else float("nan")) * ms,
            f"{prefix}_mean_ms": (self.total / self.count if self.count else float("nan")) * ms,
        }
