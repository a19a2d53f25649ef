"""Triage: pure functions that turn stored captures into DSL queue items.

Nothing here touches the database or the clock: the store hands in the facts (open queue
items, each pupil's last 24 hours, active exemptions, ``now``) and applies the returned plan.

Priority (higher = more urgent) is the sum of:

* severity x 20 (20..100);
* repetition: +2 per earlier capture by the same pupil in 24 h, at most +20;
* escalation: +5 per extra category the same pupil hit in 24 h, at most +15;
* late night (local time, default 23:00-06:00): +10;
* match kind: +5 when the phrase matched as typed (``exact``), 0 when only after normalisation.

Severity 5 items are pinned to the top. Illegal-imagery categories are marked refer-to-police.
Exclusions and exemptions never suppress severity 5 or illegal-imagery categories.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from zoneinfo import ZoneInfo

__all__ = [
    "ILLEGAL_CATEGORIES",
    "OPEN_STATUSES",
    "STATUSES",
    "CaptureFacts",
    "Exemption",
    "OpenItem",
    "Plan",
    "PlannedItem",
    "TriagePolicy",
    "UserHistory",
    "find_exemption",
    "is_late_night",
    "plan",
    "score",
]

STATUSES = ("new", "in_review", "actioned", "closed", "false_positive")
OPEN_STATUSES = frozenset({"new", "in_review"})
#: Mirrors rules.ILLEGAL_CATEGORIES (kept here so triage stays a pure leaf module).
ILLEGAL_CATEGORIES = frozenset({"csam"})
DAY_MS = 24 * 3600 * 1000

Key = tuple[str, str, str]  # device id, os user, rule id


@dataclass(frozen=True)
class TriagePolicy:
    dedupe_window_ms: int = 60 * 60 * 1000
    timezone: str = "Europe/London"
    late_night_start_hour: int = 23
    late_night_end_hour: int = 6


@dataclass(frozen=True)
class CaptureFacts:
    id: str
    device_id: str
    site_id: str
    group_name: str
    os_user: str
    rule_id: str
    category: str
    severity: int
    match_kind: str
    time_ms: int
    last_time_ms: int
    count: int = 1

    @property
    def key(self) -> Key:
        return (self.device_id, self.os_user, self.rule_id)


@dataclass(frozen=True)
class OpenItem:
    """An existing queue item a capture may merge into (the newest one for its key)."""

    id: int
    status: str
    count: int
    first_time_ms: int
    last_time_ms: int
    severity: int
    priority: int


@dataclass(frozen=True)
class UserHistory:
    captures_24h: int = 0
    categories_24h: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Exemption:
    id: int
    kind: str  # exclusion | exemption
    site_id: str
    group_name: str | None
    rule_id: str | None
    category: str | None
    starts_at: int
    expires_at: int | None


@dataclass
class PlannedItem:
    existing_id: int | None
    key: Key
    site_id: str
    category: str
    severity: int
    priority: int
    pinned: bool
    refer_police: bool
    count: int
    first_time_ms: int
    last_time_ms: int
    latest_capture_id: str
    capture_ids: list[str] = field(default_factory=list)


@dataclass
class Plan:
    items: list[PlannedItem] = field(default_factory=list)
    exempted: dict[str, int] = field(default_factory=dict)  # capture id -> exemption id


def is_late_night(time_ms: int, policy: TriagePolicy) -> bool:
    hour = dt.datetime.fromtimestamp(time_ms / 1000, ZoneInfo(policy.timezone)).hour
    start, end = policy.late_night_start_hour, policy.late_night_end_hour
    if start <= end:
        return start <= hour < end
    return hour >= start or hour < end


def score(
    severity: int, repeats_24h: int, categories_24h: int, late_night: bool, match_kind: str
) -> int:
    """Priority of a queue item; see the module docstring for the formula."""
    sev = min(max(severity, 1), 5)
    return (
        sev * 20
        + min(max(repeats_24h, 0), 10) * 2
        + min(max(categories_24h - 1, 0), 3) * 5
        + (10 if late_night else 0)
        + (5 if match_kind == "exact" else 0)
    )


def find_exemption(
    c: CaptureFacts, exemptions: Iterable[Exemption], now_ms: int
) -> Exemption | None:
    """The first active exclusion/exemption covering this capture; never for severity 5 or
    illegal-imagery categories."""
    if c.severity >= 5 or c.category in ILLEGAL_CATEGORIES:
        return None
    for e in exemptions:
        if e.site_id != c.site_id:
            continue
        if e.group_name is not None and e.group_name != c.group_name:
            continue
        if e.rule_id is not None and e.rule_id != c.rule_id:
            continue
        if e.category is not None and e.category != c.category:
            continue
        if e.starts_at > now_ms or (e.expires_at is not None and e.expires_at <= now_ms):
            continue
        return e
    return None


def plan(
    captures: Sequence[CaptureFacts],
    open_items: Mapping[Key, OpenItem],
    history: Mapping[tuple[str, str], UserHistory],
    exemptions: Sequence[Exemption],
    now_ms: int,
    policy: TriagePolicy = TriagePolicy(),
) -> Plan:
    """Decide which queue item every new capture joins (or whether it is exempt).

    Captures with the same (device, user, rule) within ``dedupe_window_ms`` of the item's
    latest capture merge into one item (its count adds up); otherwise a new item starts.
    Only items still ``new`` or ``in_review`` take merges.
    """
    out = Plan()
    current: dict[Key, PlannedItem] = {}
    hist = dict(history)
    for c in sorted(captures, key=lambda x: (x.time_ms, x.id)):
        ex = find_exemption(c, exemptions, now_ms)
        if ex is not None:
            out.exempted[c.id] = ex.id
            continue
        ukey = (c.site_id, c.os_user)
        h = hist.get(ukey, UserHistory())
        cats = h.categories_24h | {c.category}
        prio = score(c.severity, h.captures_24h, len(cats), is_late_night(c.time_ms, policy),
                     c.match_kind)
        hist[ukey] = UserHistory(h.captures_24h + max(c.count, 1), cats)
        item = current.get(c.key)
        if item is None:
            old = open_items.get(c.key)
            if (
                old is not None
                and old.status in OPEN_STATUSES
                and c.time_ms - old.last_time_ms <= policy.dedupe_window_ms
            ):
                item = PlannedItem(
                    existing_id=old.id, key=c.key, site_id=c.site_id, category=c.category,
                    severity=old.severity, priority=old.priority, pinned=old.severity >= 5,
                    refer_police=c.category in ILLEGAL_CATEGORIES, count=old.count,
                    first_time_ms=old.first_time_ms, last_time_ms=old.last_time_ms,
                    latest_capture_id=c.id,
                )
                out.items.append(item)
                current[c.key] = item
        elif c.time_ms - item.last_time_ms > policy.dedupe_window_ms:
            item = None
        if item is None:
            item = PlannedItem(
                existing_id=None, key=c.key, site_id=c.site_id, category=c.category,
                severity=c.severity, priority=prio, pinned=c.severity >= 5,
                refer_police=c.category in ILLEGAL_CATEGORIES, count=0,
                first_time_ms=c.time_ms, last_time_ms=c.last_time_ms, latest_capture_id=c.id,
            )
            out.items.append(item)
            current[c.key] = item
        item.count += max(c.count, 1)
        item.severity = max(item.severity, c.severity)
        item.priority = max(item.priority, prio)
        item.pinned = item.severity >= 5
        item.refer_police = item.refer_police or c.category in ILLEGAL_CATEGORIES
        item.first_time_ms = min(item.first_time_ms, c.time_ms)
        item.last_time_ms = max(item.last_time_ms, c.last_time_ms, c.time_ms)
        item.latest_capture_id = c.id
        item.capture_ids.append(c.id)
    return out


def with_status(item: OpenItem, status: str) -> OpenItem:
    """Helper for tests and the store: the same item in another state."""
    return replace(item, status=status)
