"""CPU and memory of a process over a window (psutil), e.g. the collector under load."""

from __future__ import annotations

import time
from typing import Any

import psutil

__all__ = ["Meter", "pct", "summary"]


class Meter:
    """``with Meter(pid) as m: ...`` then ``m.result``: CPU % of one core, RSS at the end."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.result: dict[str, float] = {}

    def _cpu(self) -> float:
        t = self.proc.cpu_times()
        return float(t.user + t.system)

    def __enter__(self) -> Meter:
        self._c0, self._t0 = self._cpu(), time.monotonic()
        return self

    def __exit__(self, *exc: Any) -> None:
        wall = time.monotonic() - self._t0
        cpu = self._cpu() - self._c0
        self.result = {"seconds": wall, "cpu_s": cpu,
                       "cpu_percent": cpu / wall * 100 if wall > 0 else 0.0,
                       "rss_mib": self.proc.memory_info().rss / 2**20}


def pct(xs: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; ``xs`` must not be empty."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def summary(xs: list[float]) -> dict[str, float]:
    """p50/p90/p99/max of latencies in ms (empty -> {})."""
    if not xs:
        return {}
    return {"n": len(xs), "p50_ms": pct(xs, 0.5), "p90_ms": pct(xs, 0.9),
            "p99_ms": pct(xs, 0.99), "max_ms": max(xs)}
