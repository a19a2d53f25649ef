"""Turns rule hits into captures, merges repeats, and writes them to the spool.

A capture is built from a hit plus where it happened (window title and process, or the
removable volume). Repeats of the same rule in the same window within ``merge_seconds`` are
merged into the capture still waiting in the spool (``count`` goes up) instead of becoming a
new one. A screenshot is taken only when the rule allows it, the severity is at or above the
configured threshold, and the category is not one where copying the evidence could itself be
an offence (``rules.ILLEGAL_CATEGORIES``): for those, never.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proto import vigil_pb2 as pb

from .spool import Spool

__all__ = ["MAX_REASONS", "MAX_REASON_CHARS", "CaptureBuilder", "Region", "Where",
           "grab_screenshot", "screenshot_allowed", "window_screenshot", "wire_text"]

#: Bounds on a capture's reasons (the wire contract's limits).
MAX_REASONS = 16
MAX_REASON_CHARS = 200

log = logging.getLogger(__name__)


def wire_text(text: str) -> str:
    """*text* made safe for protobuf (UTF-8 only): lone surrogates become U+FFFD.

    They arrive from the OS, not from typing: a file name or mount point that is not UTF-8
    (``os.fsdecode`` keeps its bytes as surrogates) or a window title with an unpaired
    UTF-16 half. Such text must still become a capture, never an exception.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text

_SOURCES = {"keys": pb.SOURCE_KEYS, "window": pb.SOURCE_WINDOW, "media": pb.SOURCE_MEDIA}
_KINDS = {"exact": pb.MATCH_KIND_EXACT, "normalised": pb.MATCH_KIND_NORMALISED}


@dataclass(frozen=True)
class Where:
    """Where a hit happened: the focused window when it was typed or shown."""

    window_title: str = ""
    process: str = ""


def _illegal() -> frozenset[str]:
    import rules

    return frozenset(rules.ILLEGAL_CATEGORIES)


def screenshot_allowed(rule: Any, min_severity: int) -> bool:
    """True when a screenshot may be taken for *rule* (never for illegal categories)."""
    if rule.category in _illegal():
        return False
    return bool(rule.screenshot) and int(rule.severity) >= min_severity


Region = tuple[int, int, int, int]  # left, top, width, height (screen pixels)


def grab_screenshot(region: Region | None = None) -> bytes:
    """PNG of *region* (or of the whole screen when None) via mss, or b"" if the screen
    cannot be read."""
    try:
        import mss
        import mss.tools

        factory = getattr(mss, "MSS", None) or mss.mss
        with factory() as sct:
            area: Any = sct.monitors[0]
            if region is not None:
                left, top, width, height = region
                area = {"left": left, "top": top, "width": width, "height": height}
            shot = sct.grab(area)
            png = mss.tools.to_png(shot.rgb, shot.size)
            return png or b""
    except Exception as exc:  # a missing screenshot must never lose the capture
        log.warning("screenshot failed: %s", exc)
        return b""


def window_screenshot(focused: Callable[[], Region | None]) -> Callable[[], bytes]:
    """A screenshot function for the focused window only: nothing when the window's
    rectangle cannot be found (never the whole screen instead)."""
    def grab() -> bytes:
        rect = focused()
        if rect is None or rect[2] <= 0 or rect[3] <= 0:
            log.warning("screenshot skipped: the focused window's position is unknown")
            return b""
        return grab_screenshot(rect)

    return grab


def _uuid7() -> str:
    import uuid6

    return str(uuid6.uuid7())


class CaptureBuilder:
    """Builds captures and spools them. Thread-safe as far as the spool is."""

    def __init__(self, spool: Spool, *, os_user: str, hostname: str,
                 rules_version: Callable[[], int] = lambda: 0,
                 clock: Callable[[], float] = time.time,
                 screenshot: Callable[[], bytes] = grab_screenshot,
                 merge_seconds: float = 60.0, screenshot_min_severity: int = 4,
                 on_capture: Callable[[pb.Capture], None] | None = None) -> None:
        self.spool = spool
        self.os_user, self.hostname = os_user, hostname
        self.rules_version = rules_version
        self.clock = clock
        self.screenshot = screenshot
        self.merge_seconds = merge_seconds
        self.screenshot_min_severity = screenshot_min_severity
        self.on_capture = on_capture
        self._recent: dict[tuple[str, str, str, str], tuple[str, float]] = {}

    def hit(self, hit: Any, source: str, where: Where = Where()) -> pb.Capture | None:
        """Spool a capture for a matcher hit; None when it merged into an earlier one."""
        now = self.clock()
        key = (hit.rule.id, source, where.window_title, where.process)
        prev = self._recent.get(key)
        if (prev is not None and now - prev[1] <= self.merge_seconds
                and self.spool.bump(prev[0], int(now * 1000))):
            self._recent[key] = (prev[0], now)
            return None
        cap = self._build(hit.rule, source, now, match=hit.match, context=hit.context,
                          kind=hit.match_kind, where=where)
        reasons = getattr(hit, "reasons", ()) or ()
        cap.reasons.extend(wire_text(r)[:MAX_REASON_CHARS] for r in reasons[:MAX_REASONS])
        score = getattr(hit, "score", None)
        if score is not None:
            cap.score = float(score)
        self._recent[key] = (cap.id, now)
        self._prune(now)
        return self._store(cap)

    def media(self, rule: Any, info: pb.MediaInfo, match: str = "",
              context: str = "") -> pb.Capture | None:
        """Spool a capture for a removable-media event (never merged)."""
        cap = self._build(rule, "media", self.clock(), match=match, context=context,
                          kind="exact", where=Where())
        cap.media.CopyFrom(info)
        return self._store(cap)

    def _build(self, rule: Any, source: str, now: float, *, match: str, context: str,
               kind: str, where: Where) -> pb.Capture:
        ms = int(now * 1000)
        cap = pb.Capture(
            id=_uuid7(), os_user=self.os_user, time_unix_ms=ms, last_time_unix_ms=ms, count=1,
            source=_SOURCES[source], rule_id=rule.id, category=rule.category,
            severity=int(rule.severity), match=wire_text(match), context=wire_text(context),
            window_title=wire_text(where.window_title), process=wire_text(where.process),
            match_kind=_KINDS.get(kind, pb.MATCH_KIND_UNSPECIFIED),
            rules_version=int(self.rules_version()), hostname=self.hostname)
        if source != "media" and screenshot_allowed(rule, self.screenshot_min_severity):
            cap.screenshot_png = self.screenshot()
        return cap

    def _store(self, cap: pb.Capture) -> pb.Capture | None:
        stored = self.spool.put(cap)
        if stored:
            log.info("capture %s: rule %s (severity %d, %s)", cap.id, cap.rule_id,
                     cap.severity, pb.Source.Name(cap.source))
            if self.on_capture is not None:
                self.on_capture(cap)
        return cap if stored else None

    def _prune(self, now: float) -> None:
        if len(self._recent) > 1000:
            self._recent = {k: v for k, v in self._recent.items()
                            if now - v[1] <= self.merge_seconds}
