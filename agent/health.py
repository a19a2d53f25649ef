"""Source health: every source runs supervised, restarted with back-off, and its state shown.

A source (window titles, keys, media) is a blocking ``run`` on its own thread. If it raises,
or returns while the agent is not stopping, it is restarted after an exponential back-off
with jitter (1 s doubling to 60 s); after :data:`FAILED_AFTER` failures in a row with no
healthy minute between them it is reported ``failed`` (and still retried every minute, so a
display server that comes back is picked up). ``status`` and the heartbeat show each
source's state, restarts, last error and the time of its last event: a device whose keyboard
source is down is not "monitored", and says so.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FAILED_AFTER", "SourceHealth", "Supervisor"]

log = logging.getLogger(__name__)

#: Consecutive failures after which a source is reported as failed.
FAILED_AFTER = 5
_HEALTHY_RUN = 60.0  # a run this long resets the failure count


@dataclass
class SourceHealth:
    """One source's state: ``running``, ``restarting``, ``failed`` or ``stopped``."""

    name: str
    state: str = "stopped"
    restarts: int = 0
    failures: int = 0
    error: str = ""
    last_event_unix: float = 0.0
    next_try_unix: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {"state": self.state, "restarts": self.restarts, "error": self.error,
                "last_event_unix": round(self.last_event_unix, 3)}


class Supervisor:
    """Runs ``fn`` on a daemon thread until ``stop`` is set, restarting it when it fails."""

    def __init__(self, name: str, fn: Callable[[], None], stop: threading.Event,
                 health: SourceHealth, *, initial: float = 1.0, maximum: float = 60.0,
                 clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random) -> None:
        self.name, self.fn, self.stop, self.health = name, fn, stop, health
        self.initial, self.maximum = initial, maximum
        self.clock, self.rng = clock, rng
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Supervisor:
        self.thread.start()
        return self

    def _loop(self) -> None:
        h = self.health
        while not self.stop.is_set():
            h.state = "running"
            started = time.monotonic()
            try:
                self.fn()
                if self.stop.is_set():
                    break
                raise RuntimeError("stopped by itself")
            except Exception as exc:
                if self.stop.is_set():
                    break
                if time.monotonic() - started >= _HEALTHY_RUN:
                    h.failures = 0
                h.failures += 1
                h.error = f"{type(exc).__name__}: {exc}"[:300]
                base = min(self.maximum, self.initial * 2 ** min(h.failures - 1, 30))
                delay = base / 2 + self.rng() * base / 2
                h.state = "failed" if h.failures >= FAILED_AFTER else "restarting"
                h.next_try_unix = self.clock() + delay
                log.error("source %s failed (%s); %s, next try in %.1f s", self.name, h.error,
                          h.state, delay, exc_info=exc)
                if self.stop.wait(delay):
                    break
                h.restarts += 1
        h.state = "stopped"
