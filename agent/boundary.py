"""The boundary worker: the context layer and the learned scorer, off the input thread.

At each boundary (Enter, sentence end, focus change, idle, a window title shown) the current
bounded context is handed here. A worker thread runs ``rules.engine.Detector.boundary`` on
it and passes any hits on; the text is dropped as soon as it is scored. It is never written
anywhere: the queue holds at most :data:`MAX_PENDING` contexts in memory.

The keyboard callback only enqueues (it must never wait for the scorer: an OS input hook
that is slow is removed by the OS). If the worker fails, the error is logged and counted and
the worker carries on with the next context; the phrase layer keeps matching every key
regardless.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from rules import Hit
from rules.engine import Detector

from .sources import WindowInfo

__all__ = ["MAX_PENDING", "BoundaryWorker", "Context"]

log = logging.getLogger(__name__)

#: Contexts waiting for the scorer. A pupil cannot type faster than ~10 boundaries a second
#: and one takes a few milliseconds, so this is only reached if the worker is stuck.
MAX_PENDING = 256


@dataclass(frozen=True)
class Context:
    """One finished (or sentence-complete) context. ``key`` identifies it for dedupe."""

    key: str
    text: str
    source: str
    window: WindowInfo | None


HitSink = Callable[[list[Hit], Context], None]


class BoundaryWorker:
    """One daemon thread scoring contexts in order. ``detector`` is read at each context,
    so a rule or model swap applies from the next one."""

    def __init__(self, detector: Callable[[], Detector | None], on_hits: HitSink,
                 group: Callable[[], str | None], context_chars: Callable[[], int],
                 on_drop: Callable[[str], None] = lambda reason: None) -> None:
        self._detector, self._on_hits, self._group = detector, on_hits, group
        self._context_chars = context_chars
        self._on_drop = on_drop
        self._q: queue.Queue[Context | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.errors = 0
        self.scored = 0
        self._pending = 0
        self._cond = threading.Condition()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vigil-scorer", daemon=True)
            self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, ctx: Context) -> None:
        """Queue a context; never blocks. When the queue is full the oldest waiting context
        is dropped and counted (``scorer_backlog``), so the newest text is always scored."""
        if not ctx.text.strip():
            return
        if self._q.qsize() >= MAX_PENDING:
            try:
                self._q.get_nowait()
                self._done()
                self._on_drop("scorer_backlog")
                log.warning("scorer backlog full: oldest waiting context dropped (counted)")
            except queue.Empty:
                pass
        with self._cond:
            self._pending += 1
        self._q.put(ctx)

    def wait_idle(self, timeout: float) -> bool:
        """Block until every queued context is scored (tests and shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def _done(self) -> None:
        with self._cond:
            self._pending -= 1
            self._cond.notify_all()

    def stop(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while True:
            ctx = self._q.get()
            if ctx is None:
                return
            try:
                self._score(ctx)
            except Exception:
                self.errors += 1
                self._on_drop("scorer_error")
                log.exception("scoring a context failed (counted as scorer_error); continuing")
            self._done()

    def _score(self, ctx: Context) -> None:
        det = self._detector()
        if det is None:
            return
        hits = det.boundary(ctx.text, ctx.source, self._group(), self._context_chars())
        self.scored += 1
        if hits:
            self._on_hits(hits, ctx)
