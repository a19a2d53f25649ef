"""The DSL queue: the filters a DSL can set, and one page of the items they may see (their
sites only; illegal-imagery items show nothing but their category)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlencode

from collector.domain.vocabulary import (
    OPEN_STATUSES,
    STATUS_LABELS,
    STATUSES,
    category_label,
    is_illegal,
)
from collector.services._text import fmt_time, parse_date
from collector.services.accounts import AccountsService, User
from collector.store.repos.console import ConsoleRepos
from collector.store.repos.queue import QueueQuery

__all__ = ["MAX_PAGE", "PAGE_SIZE", "QueueFilters", "QueueRow", "QueueService"]

PAGE_SIZE = 50
MAX_PAGE = 10_000


@dataclass(frozen=True)
class QueueFilters:
    site: str = ""
    category: str = ""
    severity: str = ""       # minimum severity, '' = any
    status: str = "open"     # open | all | one of STATUSES
    pupil: str = ""          # username or part of a display name
    device: str = ""         # device id or hostname
    date_from: str = ""      # YYYY-MM-DD
    date_to: str = ""
    page: int = 1

    @classmethod
    def from_query(cls, q: Mapping[str, str]) -> QueueFilters:
        """From a query string; bad values fall back to the defaults (never an error)."""
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in q:
                kw[f.name] = q[f.name].strip()[:200]
        page = str(kw.get("page", "1"))
        kw["page"] = max(1, min(int(page), MAX_PAGE)) if page.isdigit() and len(page) < 8 else 1
        if kw.get("status", "open") not in ("open", "all", *STATUSES):
            kw["status"] = "open"
        sev = str(kw.get("severity", ""))
        if sev and not (sev.isdigit() and len(sev) <= 2):
            kw["severity"] = ""
        return cls(**kw)

    def query_string(self, **override: Any) -> str:
        values = {f.name: getattr(self, f.name) for f in fields(self)} | override
        return urlencode({k: v for k, v in values.items() if v not in ("", None, 1)})


@dataclass(frozen=True)
class QueueRow:
    id: int
    site_id: str
    pinned: bool
    restricted: bool        # illegal imagery: nothing but the category until four-eyes unlock
    severity: int
    priority: int
    category: str
    category_label: str
    status: str
    status_label: str
    count: int
    last_time: str
    pupil: str
    device: str
    match: str
    assignee: str


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class QueueService:
    def __init__(self, store: ConsoleRepos, clock: Callable[[], float],
                 accounts: AccountsService) -> None:
        self.store = store
        self.clock = clock
        self.accounts = accounts

    def _query(self, f: QueueFilters, sites: list[str]) -> QueueQuery:
        chosen = [f.site] if f.site in sites else sites
        statuses = (sorted(OPEN_STATUSES) if f.status == "open"
                    else [f.status] if f.status in STATUSES else [])
        users = devices = None
        if f.pupil:  # resolve names first: a correlated sub-query per row is far too slow
            users = sorted({f.pupil} | set(self.store.pupils_named_like(chosen, _like(f.pupil))))
        if f.device:
            devices = sorted({f.device} | set(self.store.devices_named(chosen, f.device)))
        return QueueQuery(
            sites=chosen, statuses=statuses, category=f.category,
            min_severity=int(f.severity) if f.severity.isdigit() else None,
            os_users=users, device_ids=devices, start_ms=parse_date(f.date_from),
            end_ms=parse_date(f.date_to, end=True))

    def page(self, user: User, f: QueueFilters) -> tuple[list[QueueRow], int]:
        """One page of the queue the user may see, and how many items match in total."""
        self.accounts.require(user, "queue")
        sites = self.accounts.sites_of(user)
        if not sites:
            return [], 0
        q = self._query(f, sites)
        total = self.store.queue_count(q)
        out = []
        for r in self.store.queue_rows(q, PAGE_SIZE, (f.page - 1) * PAGE_SIZE):
            restricted = is_illegal(r["category"], r["refer_police"])
            host = r["hostname"] or r["c_hostname"] or r["device_id"][:12]
            out.append(QueueRow(
                id=r["id"], site_id=r["site_id"], pinned=bool(r["pinned"]),
                restricted=restricted, severity=r["severity"], priority=r["priority"],
                category=r["category"], category_label=category_label(r["category"]),
                status=r["status"], status_label=STATUS_LABELS.get(r["status"], r["status"]),
                count=r["count"], last_time=fmt_time(r["last_time_ms"]),
                pupil="Restricted" if restricted else (r["display_name"] or r["os_user"]),
                device="Restricted" if restricted else
                (f"{r['room']} · {host}" if r["room"] else host),
                match="" if restricted else (r["match"] or "")[:80],
                assignee=r["assignee"] or "",
            ))
        return out, total
