"""The monitor: wires sources → matchers → capture builder. Holds no OS code.

Sources (window, keys, media) run on their own supervised threads (restarted with back-off,
their health in :attr:`Monitor.health`) and call :meth:`Monitor.on_window`,
:meth:`Monitor.on_key` and :meth:`Monitor.on_media`. Tests can call these directly with
plain data; the real backends come from ``agent.platform``.

``on_key`` only puts the event on a queue (an OS input hook that is slow is removed by the
OS): the input worker thread runs the key stream, the capture builder (screenshots, spool
writes) and the short-idle timer. Focus changes go through the same queue, so every key is
matched in the window it was typed in; so do the accessibility API's notices of which field
has focus (``on_field``, from its own thread: password fields are never matched).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import rules
from proto import vigil_pb2 as pb
from rules.engine import Detector, merge_hits
from rules.scorer import Scorer

from .boundary import BoundaryWorker, Context
from .capture import CaptureBuilder, Where, wire_text
from .config import Config
from .exclusion import Exclusions
from .health import SourceHealth, Supervisor
from .keystream import KeyStream
from .rulestate import ActiveRules
from .sources import (
    FieldInfo,
    FieldSource,
    KeyEvent,
    KeySource,
    MediaEvent,
    MediaSource,
    SelectionReader,
    StopSignal,
    WindowInfo,
    WindowSource,
)

__all__ = ["Monitor"]

_TICK = threading.Event()  # a marker on the input queue: the key stream's timer is due

log = logging.getLogger(__name__)


def _age_band(group: str) -> str | None:
    """The rules age band for *group*, or None (every band's rules) if it is not one.

    A device's enrolment group is a school's own name ("year-9", "trolley-2"), not an age
    band; the collector names the band in AgentConfig once the pupil is known. Until then,
    matching with every band's rules is the safe choice: a concern is never missed because
    the band is not yet known.
    """
    if not group:
        return None
    if group in rules.GROUPS:
        return group
    log.info("group %r is not an age band (%s): matching every band's rules until the "
             "collector names one", group, ", ".join(rules.GROUPS))
    return None


class _Focus:
    __slots__ = ("window",)

    def __init__(self, window: WindowInfo | None) -> None:
        self.window = window


class _FieldsLive:
    __slots__ = ("live",)

    def __init__(self, live: bool) -> None:
        self.live = live


_Input = KeyEvent | FieldInfo | _Focus | _FieldsLive | threading.Event


class Monitor:
    def __init__(self, config: Config, rules: ActiveRules, builder: CaptureBuilder,
                 on_window_built: Callable[[WindowInfo], None] | None = None,
                 scorer: Scorer | None = None) -> None:
        self.config = config
        self.rules = rules
        self.builder = builder
        self.scorer = scorer
        self.group: str | None = _age_band(config.group)
        self._lock = threading.RLock()
        self._window: WindowInfo | None = None
        self._window_matcher: Any = None
        self._media_matcher: Any = None
        self._detector: Detector | None = None
        # (context key, category) -> highest severity already captured: one concern typed
        # once is one capture per category, whichever layers agree on it
        self._reported: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._showings = 0
        self.boundary = BoundaryWorker(lambda: self._detector, self._boundary_hits,
                                       group=lambda: self.group,
                                       context_chars=lambda: self.config.context_chars,
                                       on_drop=builder.spool.count_drop)
        self.keys = KeyStream(None, self._key_hits,
                              Exclusions.of(config.excluded_windows, config.excluded_processes,
                                            config.search_page_titles),
                              idle_seconds=config.idle_reset_seconds,
                              on_boundary=self._key_boundary,
                              boundary_chars=4 * config.context_chars,
                              release_seconds=config.idle_release_seconds,
                              settle_seconds=config.focus_settle_seconds)
        self._on_window_built = on_window_built
        self._stop = StopSignal()
        self._threads: list[threading.Thread] = []
        self._inputs: queue.SimpleQueue[_Input | None] = queue.SimpleQueue()
        #: Per source: running / restarting / failed / stopped, restarts, last event time.
        #: "password_fields" is the accessibility API that tells password fields apart.
        self.health = {n: SourceHealth(n) for n in ("window", "keys", "media",
                                                    "password_fields")}
        self.input_errors = 0
        self._worker: threading.Thread | None = None
        self.excluded_reason = ""  # why keys are not matched in the focused window, if so
        self._rebuild(rules.ruleset)
        rules.subscribe(self._rebuild)

    # -- configuration ---------------------------------------------------------------------
    def _rebuild(self, ruleset: Any) -> None:
        ctx = self.config.context_chars
        with self._lock:
            self._detector = Detector(ruleset, self.scorer)
            self._window_matcher = ruleset.matcher("window", self.group, ctx)
            self._media_matcher = ruleset.matcher("media", self.group, ctx)
            self.keys.set_matcher(ruleset.matcher("keys", self.group, ctx))

    def set_scorer(self, scorer: Scorer | None) -> None:
        """Swap the learned scorer (a newer verified model); the old one serves until now."""
        with self._lock:
            self.scorer = scorer
            self._rebuild(self.rules.ruleset)

    def apply_config(self, config: Config) -> None:
        """Apply settings from the collector's AgentConfig (group, context, exclusions)."""
        self.config = config
        self.group = _age_band(config.group)
        self.builder.screenshot_min_severity = config.screenshot_min_severity
        self.keys.set_exclusions(Exclusions.of(config.excluded_windows,
                                               config.excluded_processes,
                                               config.search_page_titles))
        self._submit(_Focus(self._window))
        self._rebuild(self.rules.ruleset)

    # -- events ----------------------------------------------------------------------------
    def on_window(self, info: WindowInfo) -> None:
        with self._lock:
            if info == self._window:
                return  # openbox reports every switch twice
            # only the opaque id is logged, never the title (tests sync on this line)
            log.debug("focus: window %#x", info.window_id)
            self.health["window"].last_event_unix = time.time()
            self._set_window(info)
            if self.excluded_reason or not self.config.watch_window:
                return
            hits = self._window_matcher.scan(info.title) if info.title else []
            # one key per showing: the phrase and boundary layers agree once per showing,
            # and a window shown again later is a new showing (the builder merges repeats)
            self._showings += 1
            key = f"window:{self._showings}"
        for hit in hits:
            if self._first(key, hit):
                self.builder.hit(hit, "window", Where(info.title, info.process))
        if info.title:
            self.boundary.submit(Context(key=key, text=info.title, source="window",
                                         window=info))
        if self._on_window_built is not None:
            self._on_window_built(info)

    def _set_window(self, info: WindowInfo | None) -> None:
        self._window = info
        reason = self.keys.exclusions.reason(info)
        if reason != self.excluded_reason:
            if reason:
                log.info("keys not matched in the focused window: %s", reason)
            self.excluded_reason = reason
        self._submit(_Focus(info))

    def on_key(self, event: KeyEvent) -> None:
        """Called on the OS input thread: record the time and enqueue, nothing else."""
        self.health["keys"].last_event_unix = time.time()
        self._submit(event)

    def on_field(self, info: FieldInfo) -> None:
        """Called on the accessibility thread when a new object has keyboard focus."""
        self.health["password_fields"].last_event_unix = time.time()
        # only the role number is logged, never a name or text (tests sync on this line)
        log.debug("field focus: %s (role %d)", "password field" if info.password else
                  "not a password field" if info.known else "unknown", info.role)
        self._submit(info)

    @property
    def keys_excluded(self) -> str:
        """Why keys are not matched right now ("" when they are)."""
        if self.excluded_reason:
            return self.excluded_reason
        return "a password field has focus" if self.keys.in_password_field else ""

    def _submit(self, item: KeyEvent | FieldInfo | _Focus | _FieldsLive) -> None:
        if self._worker is None:  # not started (tests, tools): handle on the caller's thread
            self._handle(item)
        else:
            self._inputs.put(item)

    def wait_inputs(self, timeout: float = 10.0) -> bool:
        """Block until every event queued so far has been processed (tests, shutdown)."""
        if self._worker is None:
            return True
        done = threading.Event()
        self._inputs.put(done)
        return done.wait(timeout)

    def _input_loop(self) -> None:
        keys, q = self.keys, self._inputs
        while True:
            deadline = keys.next_deadline()
            try:
                item = q.get() if deadline is None else q.get(
                    timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                item = None if self._stop.is_set() else _TICK
            if item is None:
                return
            self._handle(item)

    def _handle(self, item: _Input) -> None:
        try:
            if isinstance(item, KeyEvent):
                self.keys.key(item)
            elif isinstance(item, _Focus):
                self.keys.focus(item.window)
            elif isinstance(item, FieldInfo):
                self.keys.field(item)
            elif isinstance(item, _FieldsLive):
                self.keys.set_fields_live(item.live)
            elif item is _TICK:
                self.keys.tick()
            else:
                item.set()
        except Exception:
            self.input_errors += 1
            self.builder.spool.count_drop("input_error")
            log.exception("handling a key event failed (counted as input_error)")

    def _key_hits(self, hits: list[Any], window: WindowInfo | None) -> None:
        where = Where(window.title, window.process) if window else Where()
        key = self.keys.context_key
        for hit in hits:
            self._first(key, hit)  # phrase hits are always captured; they set the bar
            self.builder.hit(hit, "keys", where)

    def _key_boundary(self, key: str, text: str, window: WindowInfo | None) -> None:
        self.boundary.submit(Context(key=key, text=text, source="keys", window=window))

    def _boundary_hits(self, hits: list[rules.Hit], ctx: Context) -> None:
        w = ctx.window
        where = Where(w.title, w.process) if w else Where()
        for hit in merge_hits(hits):
            if self._first(ctx.key, hit):
                self.builder.hit(hit, ctx.source, where)

    def _first(self, key: str, hit: rules.Hit) -> bool:
        """Record that ``hit``'s category was captured in context ``key``; False when it
        already was at this severity or higher."""
        k = (key, hit.rule.category)
        with self._lock:
            prev = self._reported.get(k)
            if prev is not None and prev >= hit.rule.severity:
                return False
            self._reported[k] = hit.rule.severity
            self._reported.move_to_end(k)
            while len(self._reported) > 1024:
                self._reported.popitem(last=False)
        return True

    def on_media(self, ev: MediaEvent) -> None:
        self.health["media"].last_event_unix = time.time()
        info = pb.MediaInfo(event=ev.event, label=wire_text(ev.label),
                            fstype=wire_text(ev.fstype), size_bytes=ev.size_bytes,
                            mount_point=wire_text(ev.mount_point),
                            files_written=ev.files_written, file_name=wire_text(ev.file_name))
        log.info("removable volume %s: %s (%s)", ev.event, ev.mount_point, ev.fstype)
        if ev.event in ("mounted", "unmounted"):
            for rule in self.rules.ruleset.mount_rules(self.group):
                self.builder.media(rule, info, match=ev.label)
        elif ev.event == "file_written" and ev.file_name:
            with self._lock:
                hits = self._media_matcher.scan(ev.file_name)
            for hit in hits:
                self.builder.media(hit.rule, info, match=hit.match, context=hit.context)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, window: WindowSource | None, keys: KeySource | None,
              media: MediaSource | None, selection: SelectionReader | None = None,
              fields: FieldSource | None = None) -> None:
        if selection is not None:
            self.keys.read_selection = selection.read
        if window is not None and self.config.watch_window:
            self._supervise("window", lambda: window.run(self.on_window, self._stop))
        elif window is not None and self.config.watch_keys:
            # keys still need focus changes to honour the exclusion list
            self._supervise("window", lambda: window.run(self._focus_only, self._stop))
        if media is not None and self.config.watch_media:
            self._supervise("media", lambda: media.run(self.on_media, self._stop))
        self.boundary.start()
        t = threading.Thread(target=self._input_loop, name="vigil-input", daemon=True)
        self._worker = t
        t.start()
        self._threads.append(t)
        if fields is not None and keys is not None and self.config.watch_keys:
            self._supervise("password_fields", lambda: self._run_fields(fields))
        if keys is not None and self.config.watch_keys:
            ready = threading.Event()
            self._supervise("keys", lambda: keys.run(self.on_key, self._stop, ready.set))
            # Start-up returns once keys are seen, so nothing typed after the "running"
            # notice is missed; a source that fails instead is restarted and shown in status.
            deadline = time.monotonic() + 5.0
            while not ready.wait(0.02) and not self.health["keys"].failures:
                if time.monotonic() > deadline:
                    log.error("the keyboard source is not ready after 5 s; see status")
                    break

    def _run_fields(self, fields: FieldSource) -> None:
        try:
            fields.run(self.on_field, self._stop, lambda: self._submit(_FieldsLive(True)))
        finally:
            self._submit(_FieldsLive(False))

    def _focus_only(self, info: WindowInfo) -> None:
        if info != self._window:
            self.health["window"].last_event_unix = time.time()
            self._set_window(info)

    def _supervise(self, name: str, fn: Callable[[], None]) -> None:
        sup = Supervisor(f"vigil-{name}", fn, self._stop, self.health[name],
                         initial=self.config.backoff_initial_seconds,
                         maximum=self.config.backoff_max_seconds).start()
        self._threads.append(sup.thread)

    def source_health(self) -> dict[str, dict[str, object]]:
        """Health of the sources this agent runs (the others are left out)."""
        return {n: h.as_dict() for n, h in self.health.items() if h.state != "stopped"
                or h.restarts or h.error}

    def stop(self) -> None:
        self._inputs.put(_Focus(None))  # flush what was typed last
        self._stop.set()
        self._inputs.put(None)
        for t in self._threads:
            t.join(timeout=5)
        while True:  # never started, or stopped early: what is queued is still matched
            try:
                item = self._inputs.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._handle(item)
        self.boundary.wait_idle(5.0)
        self.boundary.stop()
        self._stop.close()
