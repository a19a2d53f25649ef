"""Text the services hand to people: UK local times, dates typed in forms, and bidi controls
made visible (so a pupil's right-to-left override cannot reverse a record's text)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["BIDI_NAMES", "fmt_time", "parse_date", "show_bidi"]

try:
    _TZ: dt.tzinfo = ZoneInfo("Europe/London")
except ZoneInfoNotFoundError:  # pragma: no cover
    _TZ = dt.UTC

#: Unicode bidirectional controls (and marks) -> the visible name they are shown as.
BIDI_NAMES: dict[str, str] = {
    "\u202a": "LRE", "\u202b": "RLE", "\u202c": "PDF", "\u202d": "LRO", "\u202e": "RLO",
    "\u2066": "LRI", "\u2067": "RLI", "\u2068": "FSI", "\u2069": "PDI",
    "\u200e": "LRM", "\u200f": "RLM", "\u061c": "ALM",
}
_BIDI_TABLE = {ord(ch): f"\u27e8{name}\u27e9" for ch, name in BIDI_NAMES.items()}


def show_bidi(text: str) -> str:
    """Replace each bidi control with a visible marker such as ``⟨RLO⟩``."""
    return text.translate(_BIDI_TABLE)


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
        start = dt.datetime(d.year, d.month, d.day, tzinfo=_TZ)
        if end:
            start += dt.timedelta(days=1)
        return int(start.timestamp() * 1000)
    except (ValueError, OverflowError):
        return None
