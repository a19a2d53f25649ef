"""Human labels: categories, statuses, actions, times. Shared by pages and exports."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["ACTIONS", "ILLEGAL_CATEGORIES", "STATUSES", "category_label", "fmt_time",
           "is_illegal", "known_categories", "parse_date"]

from collector.domain.vocabulary import (
    ACTIONS,
    ILLEGAL_CATEGORIES,
    STATUS_LABELS,
    category_label,
    is_illegal,
    known_categories,
)

#: Status id -> label (the vocabulary's, under the name the templates use).
STATUSES: dict[str, str] = STATUS_LABELS

try:
    _TZ: dt.tzinfo = ZoneInfo("Europe/London")
except ZoneInfoNotFoundError:  # pragma: no cover
    _TZ = dt.UTC


def fmt_time(ms: int | None, seconds: bool = False) -> str:
    """UK local time, as a DSL would write it in the incident log."""
    if ms is None:
        return ""
    t = dt.datetime.fromtimestamp(ms / 1000, tz=_TZ)
    return t.strftime("%d/%m/%Y %H:%M:%S" if seconds else "%d/%m/%Y %H:%M")


def parse_date(text: str, end: bool = False) -> int | None:
    """'YYYY-MM-DD' (UK local day) -> ms at its start (or end); None when empty/invalid."""
    try:
        d = dt.date.fromisoformat(text.strip())
    except ValueError:
        return None
    start = dt.datetime(d.year, d.month, d.day, tzinfo=_TZ)
    if end:
        start += dt.timedelta(days=1)
    return int(start.timestamp() * 1000)
