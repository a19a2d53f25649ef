"""Human labels: categories, statuses, actions, times. Shared by pages and exports."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["ACTIONS", "ILLEGAL_CATEGORIES", "STATUSES", "category_label", "fmt_time",
           "is_illegal", "known_categories"]

try:  # the rules package owns the category list; fall back to the id while it is being built
    from rules import CATEGORIES as _CATEGORIES
    from rules import ILLEGAL_CATEGORIES as _ILLEGAL
except ImportError:  # pragma: no cover - only while rules/ is unfinished
    _CATEGORIES, _ILLEGAL = {}, frozenset({"csam"})

ILLEGAL_CATEGORIES: frozenset[str] = frozenset(_ILLEGAL) | {"csam"}

# The response matrix from the seed policies (action id -> label).
ACTIONS: dict[str, str] = {
    "refer_tutor": "Referred to class teacher / tutor",
    "refer_head_of_year": "Referred to head of year / pastoral",
    "refer_headteacher": "Referred to headteacher",
    "refer_police": "Referred to police",
    "refer_technical": "Referred to technical staff (filtering)",
    "inform_parents": "Informed parents / carers",
    "warning": "Warning given",
    "further_sanction": "Further sanction",
}
STATUSES: dict[str, str] = {
    "new": "New",
    "in_review": "In review",
    "actioned": "Actioned",
    "closed": "Closed",
    "false_positive": "False positive",
}

try:
    _TZ: dt.tzinfo = ZoneInfo("Europe/London")
except ZoneInfoNotFoundError:  # pragma: no cover
    _TZ = dt.UTC


def category_label(category: str) -> str:
    return str(_CATEGORIES.get(category) or category.replace("_", " ").capitalize())


def known_categories() -> list[str]:
    """Category ids for the queue's filter (from the rules package, not a table scan)."""
    return sorted(set(_CATEGORIES) | ILLEGAL_CATEGORIES)


def is_illegal(category: str, refer_police: int | bool = 0) -> bool:
    return bool(refer_police) or category in ILLEGAL_CATEGORIES


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
