"""Boundary validation: a wire ``Capture`` becomes a :class:`NewCapture` or a rejection.

Text fields are bounded; an over-long field is cut and ends with :data:`TRUNCATED`, so the
DSL can see that something was removed. A capture must also agree with the rules: its rule id,
category, source and severity are checked against :class:`RuleCatalogue` (every rule of every
bundle this collector has published, plus the built-in library agents run before their first
bundle). Rejections are permanent unless :func:`retry_after` says otherwise (the agent drops
and counts them as ``rejected:<reason>``). docs/wire.md is the normative list.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.domain.vocabulary import ILLEGAL_CATEGORIES
from collector.store.base import DeviceRow, NewCapture
from proto import vigil_pb2 as pb
from rules import CATEGORIES, SOURCES
from rules.scorer import MODEL_RULE_PREFIX

__all__ = ["MAX_FUTURE_MS", "TRUNCATED", "Limits", "RuleCatalogue", "bound", "safe_text",
           "to_new_capture"]

TRUNCATED = "…[truncated]"
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_SLUG = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_SOURCES = {pb.SOURCE_KEYS: "keys", pb.SOURCE_WINDOW: "window", pb.SOURCE_MEDIA: "media"}
_KINDS = {pb.MATCH_KIND_EXACT: "exact", pb.MATCH_KIND_NORMALISED: "normalised"}
_REASONS, _REASON_CHARS = 16, 200  # docs/wire.md: the first 16 reasons, each cut to 200
#: A capture dated more than this after the collector's clock is refused (``future_time``):
#: a day covers any real clock drift or time zone mistake.
MAX_FUTURE_MS = 24 * 3600 * 1000


@dataclass
class _Known:
    """What the published versions of one rule id allow (a union over versions)."""

    categories: set[str] = field(default_factory=set)
    sources: set[str] = field(default_factory=set)
    severities: set[int] = field(default_factory=set)
    scoring: bool = False  # weights or combos in some version: severity may be lower


class RuleCatalogue:
    """Every rule id a trustworthy agent can report, with what each allows.

    Agents run the bundle they last verified, which may be older or newer than the active
    one, so a capture is checked against the union of every version this collector has
    published (``add_bundle``) and the built-in library (``add_rules``, rules version 0).
    ``model.<category>`` ids (the learned scorer) are always known: any source, any severity.
    """

    def __init__(self) -> None:
        self._rules: dict[str, _Known] = {}
        self.versions: set[int] = set()

    @property
    def newest(self) -> int:
        return max(self.versions, default=0)

    def add_rules(self, rules: Iterable[Mapping[str, Any]]) -> None:
        for r in rules:
            k = self._rules.setdefault(str(r["id"]), _Known())
            k.categories.add(str(r["category"]))
            k.sources.update(str(x) for x in r.get("sources", SOURCES))
            k.severities.add(int(r["severity"]))
            k.scoring = k.scoring or bool(r.get("weights") or r.get("combos"))

    def add_bundle(self, version: int, bundle: bytes) -> None:
        """Learn a published bundle (from this collector's own store: no signature check).

        A bundle that cannot be read raises (ValueError, KeyError, TypeError) and adds no
        rules, but its version still counts as published: the server pushes whatever the
        store holds as active, and the agents' ``RulesAck`` refusing it must be recorded."""
        self.versions.add(version)
        payload = json.loads(json.loads(bundle.decode("utf-8"))["payload"])
        self.add_rules(payload["rules"])

    def check(self, c: pb.Capture, source: str) -> str | None:
        """A rejection reason, or None when the capture agrees with some published rule."""
        if c.category not in CATEGORIES:
            return "unknown_category"
        if c.rule_id.startswith(MODEL_RULE_PREFIX):
            suffix = c.rule_id[len(MODEL_RULE_PREFIX):]
            if suffix not in CATEGORIES:
                return "unknown_rule"
            return None if suffix == c.category else "category_mismatch"
        k = self._rules.get(c.rule_id)
        if k is None:
            return "unknown_rule"
        if c.category not in k.categories:
            return "category_mismatch"
        if source not in k.sources:
            return "source_mismatch"
        if c.severity not in k.severities and not (k.scoring and c.severity <= max(k.severities)):
            return "severity_mismatch"
        return None

    def retry_after(self, reason: str, c: pb.Capture, retry_ms: int) -> int:
        """0 (permanent) or how long to wait before resending: only an unknown rule from a
        bundle version newer than any this collector knows may become valid (another
        collector process published it and this one has not polled yet)."""
        if reason == "unknown_rule" and c.rules_version > self.newest:
            return retry_ms
        return 0


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
    c: pb.Capture, device: DeviceRow, received_at: int, limits: Limits,
    catalogue: RuleCatalogue | None = None,
) -> NewCapture | str:
    """Return the capture ready to store, or a short rejection reason. Without a
    ``catalogue`` (``ingest.rule_check = "off"``) rule ids are only checked for form."""
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
    if c.time_unix_ms > received_at + MAX_FUTURE_MS:
        return "future_time"
    if catalogue is not None:
        refused = catalogue.check(c, source)
        if refused is not None:
            return refused
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
        reasons=(json.dumps([bound(r, _REASON_CHARS) for r in list(c.reasons)[:_REASONS]],
                            ensure_ascii=False) if c.reasons else "[]"),
        score=c.score if c.score and math.isfinite(c.score) else None,
    )
