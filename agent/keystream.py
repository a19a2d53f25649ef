"""Typed keys → streaming matcher. The raw key stream is never stored anywhere.

Characters go straight into ``rules.StreamMatcher.feed``; only hits leave. The context is
reset (pending hits flushed) on Enter, on focus change, and after ``idle_seconds`` without a
key. While the focused window or process is on the exclusion list, or a password field has
focus, keys are not matched at all: they are not even fed to the matcher.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .exclusion import Exclusions
from .sources import KeyEvent, WindowInfo

__all__ = ["KeyStream"]

HitSink = Callable[[list[Any], "WindowInfo | None"], None]


class KeyStream:
    def __init__(self, matcher: Any, on_hits: HitSink, exclusions: Exclusions,
                 idle_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._matcher = matcher
        self._on_hits = on_hits
        self.exclusions = exclusions
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._window: WindowInfo | None = None
        self._excluded = False
        self._last_key = clock()
        self._dirty = False

    @property
    def excluded(self) -> bool:
        return self._excluded

    def set_matcher(self, matcher: Any) -> None:
        """Swap in a matcher from a new rule set (pending hits of the old one are flushed)."""
        with self._lock:
            self._flush()
            self._matcher = matcher

    def set_exclusions(self, exclusions: Exclusions) -> None:
        with self._lock:
            self.exclusions = exclusions
            self._excluded = exclusions.excludes(self._window)

    def focus(self, window: WindowInfo | None) -> None:
        """Focus moved: flush hits typed in the old window, then start afresh."""
        with self._lock:
            self._flush()
            self._window = window
            self._excluded = self.exclusions.excludes(window)

    def key(self, event: KeyEvent) -> None:
        with self._lock:
            if self._excluded:
                return
            now = self._clock()
            if self._dirty and now - self._last_key > self.idle_seconds:
                self._flush()
            self._last_key = now
            if self._matcher is None:
                return
            if event.kind == "char" and event.char:
                self._dirty = True
                hits = self._matcher.feed(event.char)
                if hits:
                    self._on_hits(hits, self._window)
            elif event.kind == "backspace":
                self._matcher.backspace()
            elif event.kind == "reset":
                self._flush()

    def tick(self) -> None:
        """Called periodically: reset after the idle interval."""
        with self._lock:
            if self._dirty and self._clock() - self._last_key > self.idle_seconds:
                self._flush()

    def _flush(self) -> None:
        if self._matcher is None:
            return
        hits = self._matcher.reset()
        self._dirty = False
        if hits:
            self._on_hits(hits, self._window)
