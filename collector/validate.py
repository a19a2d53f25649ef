"""Boundary validation: a wire ``Capture`` becomes a :class:`NewCapture` or a rejection.

Text fields are bounded; an over-long field is cut and ends with :data:`TRUNCATED`, so the
DSL can see that something was removed. Rejections are permanent (the agent drops and counts
them as ``rejected:<reason>``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from collector.store.base import DeviceRow, NewCapture
from collector.triage import ILLEGAL_CATEGORIES
from proto import vigil_pb2 as pb

__all__ = ["TRUNCATED", "Limits", "bound", "safe_text", "to_new_capture"]

TRUNCATED = "…[truncated]"
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_SLUG = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_SOURCES = {pb.SOURCE_KEYS: "keys", pb.SOURCE_WINDOW: "window", pb.SOURCE_MEDIA: "media"}
_KINDS = {pb.MATCH_KIND_EXACT: "exact", pb.MATCH_KIND_NORMALISED: "normalised"}
_REASONS, _REASON_CHARS = 16, 200  # docs/wire.md: the first 16 reasons, each cut to 200


@dataclass(frozen=True)
class Limits:
    max_context_chars: int = 500
    max_title_chars: int = 500
    max_match_chars: int = 200
    max_screenshot_bytes: int = 4 * 1024 * 1024
    max_user_chars: int = 256


def safe_text(text: str) -> str:
    """``text`` with control characters (ESC, BEL, CR, NUL, ...) shown as ``\\xNN``, for
    identity fields, terminal output and logs (a host name must never drive a terminal)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def bound(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending with the truncation marker if cut."""
    if len(text) <= limit:
        return text
    keep = max(limit - len(TRUNCATED), 0)
    return text[:keep] + TRUNCATED


def to_new_capture(
    c: pb.Capture, device: DeviceRow, received_at: int, limits: Limits
) -> NewCapture | str:
    """Return the capture ready to store, or a short rejection reason."""
    if not _ID.match(c.id):
        return "bad_id"
    if not 1 <= c.severity <= 5:
        return "bad_severity"
    source = _SOURCES.get(c.source)
    if source is None:
        return "unknown_source"
    if not _SLUG.match(c.rule_id):
        return "bad_rule_id"
    if not _SLUG.match(c.category):
        return "bad_category"
    if c.time_unix_ms <= 0:
        return "bad_time"
    screenshot: bytes | None = bytes(c.screenshot_png) or None
    if screenshot is not None and (
        c.category in ILLEGAL_CATEGORIES or len(screenshot) > limits.max_screenshot_bytes
    ):
        screenshot = None  # never keep illegal imagery; oversize is cut (8 MiB wire limit)
    media = None
    if c.HasField("media"):
        m = c.media
        media = json.dumps({
            "event": bound(m.event, 32), "label": bound(m.label, 200),
            "fstype": bound(m.fstype, 32), "size_bytes": m.size_bytes,
            "mount_point": bound(m.mount_point, 500), "files_written": m.files_written,
            "file_name": bound(m.file_name, 500)}, sort_keys=True)
    return NewCapture(
        id=c.id,
        device_id=device.id,  # from the certificate, never from the body
        site_id=device.site_id,
        group_name=device.group_name,
        os_user=bound(c.os_user, limits.max_user_chars),
        hostname=bound(c.hostname or device.hostname, 255),
        time_ms=c.time_unix_ms,
        last_time_ms=max(c.last_time_unix_ms, c.time_unix_ms),
        count=max(c.count, 1),
        source=source,
        rule_id=c.rule_id,
        category=c.category,
        severity=c.severity,
        match=bound(c.match, limits.max_match_chars),
        context=bound(c.context, limits.max_context_chars),
        window_title=bound(c.window_title, limits.max_title_chars),
        process=bound(c.process, 255),
        match_kind=_KINDS.get(c.match_kind, "normalised"),
        media=media,
        rules_version=min(c.rules_version, 2**63 - 1),
        received_at=received_at,
        screenshot=screenshot,
        reasons=json.dumps([bound(r, _REASON_CHARS) for r in list(c.reasons)[:_REASONS]],
                           ensure_ascii=False),
        score=c.score if c.score and math.isfinite(c.score) else None,
    )
