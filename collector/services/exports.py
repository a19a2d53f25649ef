"""Incident log (CSV + printable HTML) and the CPOMS / MyConcern import CSV, for the DSL.

A safeguarding record states only what was recorded: the actions column lists the actions a
person recorded, and nothing else; an illegal-imagery item says its details are withheld and
that policy calls for a police referral, never that one was made unless it was recorded.

Every cell is neutralised against CSV injection (a cell a spreadsheet would read as a formula
gets a leading apostrophe) and its bidi controls are made visible (``⟨RLO⟩``), so a pupil's
right-to-left override cannot reverse the rest of a cell.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from collector.domain.vocabulary import (
    ACTIONS,
    STATUS_LABELS,
    category_label,
    is_illegal,
    role_label,
)
from collector.services._text import fmt_time, parse_date, show_bidi
from collector.services.accounts import AccountsService, User
from collector.services.casework import action_label
from collector.store.repos.console import ConsoleRepos

__all__ = ["CPOMS_COLUMNS", "INCIDENT_COLUMNS", "NO_ACTIONS_TEXT", "RESTRICTED_TEXT",
           "ExportRange", "ExportsService", "neutralise", "to_csv"]

INCIDENT_COLUMNS = ("Date and Time", "Name of Pupil or Staff Member", "Room and Device",
                    "Details of Incident", "Actions and Reasons")
CPOMS_COLUMNS = ("Student Username", "Student Name", "Year Group", "Incident Date",
                 "Incident Time", "Category", "Severity", "Incident", "Actions Taken", "Status",
                 "Recorded By", "Vigil Reference")
RESTRICTED_TEXT = "Illegal imagery category: details withheld by design (four-eyes rule)."
POLICE_PENDING_TEXT = " Policy: refer to police (no referral recorded yet)."
NO_ACTIONS_TEXT = "No action recorded"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> str:
    """One cell as it is safe to open in a spreadsheet."""
    text = show_bidi("" if value is None else str(value))
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    for row in rows:
        w.writerow([neutralise(v) for v in row])
    return "\ufeff" + buf.getvalue()  # BOM: Excel opens UTF-8 names correctly


@dataclass(frozen=True)
class ExportRange:
    sites: list[str]
    date_from: str = ""
    date_to: str = ""


def _actions_text(actions: list[dict[str, Any]]) -> str:
    parts = []
    for a in actions:
        act = a["action"]
        label = ACTIONS.get(act) or (action_label(act) if act.startswith(("status:", "assign:"))
                                     else act.replace(":", " ").capitalize())
        text = f"{fmt_time(a['at'])} {a['actor']}: {label}"
        parts.append(text + (f" ({a['note']})" if a["note"] else ""))
    return "; ".join(parts) or NO_ACTIONS_TEXT


def _restricted_text(actions: list[dict[str, Any]]) -> str:
    referred = any(a["action"] == "refer_police" for a in actions)
    return RESTRICTED_TEXT + ("" if referred else POLICE_PENDING_TEXT)


def _details(r: dict[str, Any]) -> str:
    where = {"keys": "typed", "window": "in a window title", "media": "on removable media"}
    text = (f"{category_label(r['category'])} (severity {r['severity']}): "
            f"\"{r['match'] or ''}\" {where.get(r['source'] or '', '')}")
    if r["window_title"]:
        text += f"; window \"{r['window_title']}\" ({r['process']})"
    if r["count"] > 1:
        text += f"; repeated {r['count']} times"
    return text + f"; rule {r['rule_id']}"


class ExportsService:
    def __init__(self, store: ConsoleRepos, clock: Callable[[], float],
                 accounts: AccountsService) -> None:
        self.store = store
        self.clock = clock
        self.accounts = accounts

    def range_for(self, user: User, site: str = "", date_from: str = "",
                  date_to: str = "") -> ExportRange:
        """The export range a user may ask for (Refused 404 for a site not theirs)."""
        self.accounts.require(user, "export")
        return ExportRange(self.accounts.scope(user, site), date_from[:20], date_to[:20])

    def _items(self, user: User,
               rng: ExportRange) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        self.accounts.require(user, "export")
        sites = [s for s in rng.sites if user.has_site(s)]
        if not sites:
            return []
        items = self.store.export_items(sites, parse_date(rng.date_from),
                                        parse_date(rng.date_to, end=True))
        actions = self.store.actions_of_items([r["id"] for r in items])
        return [(r, actions.get(int(r["id"]), [])) for r in items]

    def incident_rows(self, user: User, rng: ExportRange) -> list[tuple[str, ...]]:
        """The incident log, one row per queue item, in the seed's five columns."""
        out: list[tuple[str, ...]] = []
        for r, acts in self._items(user, rng):
            when = fmt_time(r["first_time_ms"])
            if is_illegal(r["category"], r["refer_police"]):
                out.append((when, "Restricted", "Restricted", _restricted_text(acts),
                            _actions_text(acts)))
                continue
            host = r["hostname"] or r["device_id"][:12]
            out.append((when, r["display_name"] or r["os_user"],
                        f"{r['room']} / {host}" if r["room"] else host, _details(r),
                        _actions_text(acts)))
        return [tuple(show_bidi(c) for c in row) for row in out]

    def cpoms_rows(self, user: User, rng: ExportRange) -> list[tuple[str, ...]]:
        """Rows for a CPOMS / MyConcern incident import (one per queue item)."""
        out: list[tuple[str, ...]] = []
        items = self._items(user, rng)
        # "Recorded By" names the person with their role as their school says it: a Welsh
        # school's lead is its DSP, an English school's its DSL
        roles = {str(a["username"]): str(a["role"]) for a in self.store.account_list()} \
            if items else {}
        wales = set(self.store.wales_site_ids()) if items else set()
        for r, acts in items:
            day, _, time = fmt_time(r["first_time_ms"]).partition(" ")
            recorder = "Vigil"
            if acts:
                who = str(acts[0]["actor"])
                role = roles.get(who)
                recorder = (f"{who} ({role_label(role, r['site_id'] in wales)})" if role
                            else who)
            restricted = is_illegal(r["category"], r["refer_police"])
            out.append((
                "" if restricted else r["os_user"],
                "Restricted" if restricted else (r["display_name"] or r["os_user"]),
                "" if restricted else (r["year_group"] or ""),
                day, time, category_label(r["category"]), str(r["severity"]),
                _restricted_text(acts) if restricted else _details(r), _actions_text(acts),
                STATUS_LABELS.get(r["status"], r["status"]), recorder, f"VIGIL-{r['id']}",
            ))
        return [tuple(show_bidi(c) for c in row) for row in out]
