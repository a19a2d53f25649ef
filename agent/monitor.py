"""The monitor: wires sources → matchers → capture builder. Holds no OS code.

Sources (window, keys, media) run on their own threads and call :meth:`Monitor.on_window`,
:meth:`Monitor.on_key` and :meth:`Monitor.on_media`. Tests can call these directly with
plain data; the real backends come from ``agent.platform``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import rules
from proto import vigil_pb2 as pb

from .capture import CaptureBuilder, Where, wire_text
from .config import Config
from .exclusion import Exclusions
from .keystream import KeyStream
from .rulestate import ActiveRules
from .sources import (
    KeyEvent,
    KeySource,
    MediaEvent,
    MediaSource,
    StopSignal,
    WindowInfo,
    WindowSource,
)

__all__ = ["Monitor"]

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


class Monitor:
    def __init__(self, config: Config, rules: ActiveRules, builder: CaptureBuilder,
                 on_window_built: Callable[[WindowInfo], None] | None = None) -> None:
        self.config = config
        self.rules = rules
        self.builder = builder
        self.group: str | None = _age_band(config.group)
        self._lock = threading.RLock()
        self._window: WindowInfo | None = None
        self._window_matcher: Any = None
        self._media_matcher: Any = None
        self.keys = KeyStream(None, self._key_hits,
                              Exclusions.of(config.excluded_windows, config.excluded_processes),
                              idle_seconds=config.idle_reset_seconds)
        self._on_window_built = on_window_built
        self._stop = StopSignal()
        self._threads: list[threading.Thread] = []
        self._key_source: KeySource | None = None
        self._rebuild(rules.ruleset)
        rules.subscribe(self._rebuild)

    # -- configuration ---------------------------------------------------------------------
    def _rebuild(self, ruleset: Any) -> None:
        ctx = self.config.context_chars
        with self._lock:
            self._window_matcher = ruleset.matcher("window", self.group, ctx)
            self._media_matcher = ruleset.matcher("media", self.group, ctx)
            self.keys.set_matcher(ruleset.matcher("keys", self.group, ctx))

    def apply_config(self, config: Config) -> None:
        """Apply settings from the collector's AgentConfig (group, context, exclusions)."""
        self.config = config
        self.group = _age_band(config.group)
        self.builder.screenshot_min_severity = config.screenshot_min_severity
        self.keys.set_exclusions(Exclusions.of(config.excluded_windows,
                                               config.excluded_processes))
        self.keys.focus(self._window)
        self._rebuild(self.rules.ruleset)

    # -- events ----------------------------------------------------------------------------
    def on_window(self, info: WindowInfo) -> None:
        with self._lock:
            if info == self._window:
                return  # openbox reports every switch twice
            # only the opaque id is logged, never the title (tests sync on this line)
            log.debug("focus: window %#x", info.window_id)
            self._window = info
            self.keys.focus(info)
            if self.keys.excluded or not self.config.watch_window:
                return
            hits = self._window_matcher.scan(info.title) if info.title else []
        for hit in hits:
            self.builder.hit(hit, "window", Where(info.title, info.process))
        if self._on_window_built is not None:
            self._on_window_built(info)

    def on_key(self, event: KeyEvent) -> None:
        self.keys.key(event)

    def _key_hits(self, hits: list[Any], window: WindowInfo | None) -> None:
        where = Where(window.title, window.process) if window else Where()
        for hit in hits:
            self.builder.hit(hit, "keys", where)

    def on_media(self, ev: MediaEvent) -> None:
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
              media: MediaSource | None) -> None:
        if window is not None and self.config.watch_window:
            self._spawn("vigil-window", lambda: window.run(self.on_window, self._stop))
        elif window is not None and self.config.watch_keys:
            # keys still need focus changes to honour the exclusion list
            self._spawn("vigil-window", lambda: window.run(self._focus_only, self._stop))
        if media is not None and self.config.watch_media:
            self._spawn("vigil-media", lambda: media.run(self.on_media, self._stop))
        if keys is not None and self.config.watch_keys:
            keys.start(self.on_key)
            self._key_source = keys
        self._spawn("vigil-tick", self._tick)

    def _focus_only(self, info: WindowInfo) -> None:
        self._window = info
        self.keys.focus(info)

    def _tick(self) -> None:
        while not self._stop.wait(5.0):
            self.keys.tick()

    def _spawn(self, name: str, fn: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                fn()
            except Exception:
                log.exception("%s stopped with an error", name)

        t = threading.Thread(target=guarded, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        if self._key_source is not None:
            self._key_source.stop()
        for t in self._threads:
            t.join(timeout=5)
        self.keys.focus(None)
        self._stop.close()
