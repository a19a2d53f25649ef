"""The audit viewer: who viewed, exported or changed what, for the DSL and the data-protection
officer. Filterable (actor, action, target, site, dates), scoped to the user's sites, paged by
key (newest first; the next page starts below the last id shown), exportable as CSV. Viewing
and exporting the audit are themselves audited.

Audit rows never hold capture content (the audit writer refuses it), so the viewer shows a DPO
nothing a DPO may not see.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from collector.services._text import fmt_time, parse_date, show_bidi
from collector.services.accounts import AccountsService, BadInput, User
from collector.services.audit import AuditLog
from collector.store.repos.audit_view import AuditQuery
from collector.store.repos.console import ConsoleRepos

__all__ = ["AUDIT_COLUMNS", "MAX_EXPORT", "PAGE_SIZE", "AuditFilters", "AuditPage",
           "AuditViewService"]

PAGE_SIZE = 50
MAX_EXPORT = 100_000
AUDIT_COLUMNS = ("Time", "Actor", "Action", "Target", "Site", "Detail", "Audit id")
#: Suggestions for the action filter (a prefix ending in '.' matches every action under it).
COMMON_ACTIONS = ("audit.", "capture.", "capture.view", "export.", "login.", "login.failed",
                  "report.", "screenshot.view", "unlock.", "user.")
_MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class AuditFilters:
    actor: str = ""
    action: str = ""
    target: str = ""
    site: str = ""
    date_from: str = ""
    date_to: str = ""
    before: int | None = None

    @classmethod
    def from_query(cls, q: Mapping[str, str]) -> AuditFilters:
        """Filters from a query string; BadInput names the field that is wrong."""
        def text(name: str, limit: int) -> str:
            return (q.get(name) or "").strip()[:limit]

        before: int | None = None
        raw = text("before", 30)
        if raw:
            if not raw.isdigit() or not 0 < int(raw) <= _MAX_ID:
                raise BadInput("before: give the audit id to continue from (a whole number)")
            before = int(raw)
        f = cls(actor=text("actor", 100), action=text("action", 100),
                target=text("target", 200), site=text("site", 100),
                date_from=text("from", 10), date_to=text("to", 10), before=before)
        for name, value in (("from", f.date_from), ("to", f.date_to)):
            if value and parse_date(value) is None:
                raise BadInput(f"{name}: give a date as YYYY-MM-DD, such as 2026-11-16")
        return f

    def query_string(self, before: int | None = None) -> str:
        """These filters as a query string (``before`` replaced: the next page's link)."""
        from urllib.parse import urlencode

        pairs = [("actor", self.actor), ("action", self.action), ("target", self.target),
                 ("site", self.site), ("from", self.date_from), ("to", self.date_to)]
        if before is not None:
            pairs.append(("before", str(before)))
        return urlencode([(k, v) for k, v in pairs if v])

    def as_detail(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in ("", None)}


@dataclass
class AuditPage:
    rows: list[dict[str, Any]]
    next_before: int | None      # the next (older) page starts below this id; None: last page
    sites: list[str]


def detail_text(raw: str | None) -> str:
    """'key=value; key=value' from the stored JSON detail."""
    try:
        detail = json.loads(raw or "{}")
    except ValueError:
        return raw or ""
    if not isinstance(detail, dict):
        return str(detail)
    parts = []
    for k in sorted(detail):
        v = detail[k]
        shown = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        parts.append(f"{k}={shown}")
    return "; ".join(parts)


class AuditViewService:
    def __init__(self, store: ConsoleRepos, clock: Callable[[], float],
                 accounts: AccountsService, audit: AuditLog) -> None:
        self.store = store
        self.clock = clock
        self.accounts = accounts
        self.audit = audit

    def _query(self, user: User, f: AuditFilters, before: int | None) -> AuditQuery:
        self.accounts.require(user, "audit")
        self.accounts.scope(user, f.site)  # Refused 404 for a site not theirs
        return AuditQuery(
            sites=tuple(self.accounts.sites_of(user)), all_sites=user.all_sites,
            actor=f.actor, action=f.action, target=f.target, site=f.site,
            start_ms=parse_date(f.date_from) if f.date_from else None,
            end_ms=parse_date(f.date_to, end=True) if f.date_to else None, before_id=before)

    @staticmethod
    def _shown(r: dict[str, Any]) -> dict[str, Any]:
        return {"id": int(r["id"]), "time": fmt_time(r["at"], seconds=True),
                "actor": r["actor"], "action": r["action"], "target": r["target"],
                "site": r["site_id"] or "", "detail": detail_text(r["detail"])}

    def page(self, user: User, f: AuditFilters) -> AuditPage:
        """One page of the audit, newest first. Audited as ``audit.view``."""
        q = self._query(user, f, f.before)
        raw = self.store.audit_page(q, PAGE_SIZE + 1)
        more = len(raw) > PAGE_SIZE
        rows = [self._shown(r) for r in raw[:PAGE_SIZE]]
        self.audit.record(user.username, "audit.view", "", f.site or None,
                          shown=len(rows), filters=f.as_detail())
        return AuditPage(rows, rows[-1]["id"] if more and rows else None,
                         self.accounts.sites_of(user))

    def export_rows(self, user: User, f: AuditFilters) -> list[tuple[str, ...]]:
        """Every row matching the filters (newest first, at most MAX_EXPORT), as CSV cells
        with bidi controls shown as marks. Audited as ``audit.export``."""
        q = self._query(user, f, f.before)
        out: list[tuple[str, ...]] = []
        before = f.before
        while len(out) < MAX_EXPORT:
            batch = self.store.audit_page(replace(q, before_id=before), 1000)
            for r in batch:
                s = self._shown(r)
                out.append(tuple(show_bidi(str(s[k])) for k in
                                 ("time", "actor", "action", "target", "site", "detail", "id")))
            if len(batch) < 1000:
                break
            before = int(batch[-1]["id"])
        self.audit.record(user.username, "audit.export", "", f.site or None,
                          rows=len(out), filters=f.as_detail())
        return out[:MAX_EXPORT]
