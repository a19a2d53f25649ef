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
from functools import lru_cache
from zoneinfo import ZoneInfo

from collector.domain.vocabulary import ILLEGAL_CATEGORIES, OPEN_STATUSES, STATUSES

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

DAY_MS = 24 * 3600 * 1000

Key = tuple[str, str, str]  # device id, os user, rule id


@dataclass(frozen=True)
class TriagePolicy:
    dedupe_window_ms: int = 60 * 60 * 1000
    timezone: str = "Europe/London"
    late_night_start_hour: int = 23
    late_night_end_hour: int = 6


@dataclass(slots=True)
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


@lru_cache(maxsize=4096)
def _local_hour(hour_bucket: int, timezone: str) -> int:
    # Every UTC offset in use is a whole number of quarter hours, so one lookup per quarter
    # hour of wall-clock time is exact.
    return dt.datetime.fromtimestamp(hour_bucket * 900, ZoneInfo(timezone)).hour


def is_late_night(time_ms: int, policy: TriagePolicy) -> bool:
    hour = _local_hour(time_ms // 900_000, policy.timezone)
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
    # Per pupil: captures and categories in the last 24 h, updated as the batch goes.
    seen_n = {k: h.captures_24h for k, h in history.items()}
    seen_cats = {k: set(h.categories_24h) for k, h in history.items()}
    window = policy.dedupe_window_ms
    for c in sorted(captures, key=lambda x: (x.time_ms, x.id)):
        if exemptions:
            ex = find_exemption(c, exemptions, now_ms)
            if ex is not None:
                out.exempted[c.id] = ex.id
                continue
        ukey = (c.site_id, c.os_user)
        cats = seen_cats.get(ukey)
        if cats is None:
            cats = seen_cats[ukey] = set()
        cats.add(c.category)
        n = seen_n.get(ukey, 0)
        prio = score(c.severity, n, len(cats), is_late_night(c.time_ms, policy), c.match_kind)
        count = c.count if c.count > 1 else 1
        seen_n[ukey] = n + count
        key = c.key
        illegal = c.category in ILLEGAL_CATEGORIES
        item = current.get(key)
        if item is None:
            old = open_items.get(key)
            if (
                old is not None
                and old.status in OPEN_STATUSES
                and c.time_ms - old.last_time_ms <= window
            ):
                item = PlannedItem(
                    existing_id=old.id, key=key, site_id=c.site_id, category=c.category,
                    severity=old.severity, priority=old.priority, pinned=old.severity >= 5,
                    refer_police=illegal, count=old.count, first_time_ms=old.first_time_ms,
                    last_time_ms=old.last_time_ms, latest_capture_id=c.id,
                )
                out.items.append(item)
                current[key] = item
        elif c.time_ms - item.last_time_ms > window:
            item = None
        if item is None:
            item = PlannedItem(
                existing_id=None, key=key, site_id=c.site_id, category=c.category,
                severity=c.severity, priority=prio, pinned=c.severity >= 5,
                refer_police=illegal, count=0, first_time_ms=c.time_ms,
                last_time_ms=c.last_time_ms, latest_capture_id=c.id,
            )
            out.items.append(item)
            current[key] = item
        item.count += count
        if c.severity > item.severity:
            item.severity = c.severity
            item.pinned = c.severity >= 5
        if prio > item.priority:
            item.priority = prio
        if illegal:
            item.refer_police = True
        if c.time_ms < item.first_time_ms:
            item.first_time_ms = c.time_ms
        last = c.last_time_ms if c.last_time_ms > c.time_ms else c.time_ms
        if last > item.last_time_ms:
            item.last_time_ms = last
        item.latest_capture_id = c.id
        item.capture_ids.append(c.id)
    return out


def with_status(item: OpenItem, status: str) -> OpenItem:
    """Helper for tests and the store: the same item in another state."""
    return replace(item, status=status)
