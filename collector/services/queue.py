"""The DSL queue: the filters a DSL can set, and one page of the items they may see (their
sites only; illegal-imagery items show nothing but their category), paginated by key.

The order is explained on every row: pinned severity 5 first, then priority, whose parts come
from triage (collector/domain/triage.py): severity x 20, repetition, escalation, late night,
exact match.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlencode

from collector.domain import triage
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
from collector.store.repos.queue import SORTS, QueueQuery

__all__ = ["MAX_PAGE", "PAGE_SIZE", "SORT_LABELS", "QueueFilters", "QueuePage", "QueueRow",
           "QueueService", "decode_key", "encode_key", "like_pattern"]

PAGE_SIZE = 50
MAX_PAGE = 10_000
#: Sortable columns (their keys are in collector/store/repos/queue.py).
SORT_LABELS: dict[str, str] = {"priority": "Priority", "severity": "Severity",
                               "last_seen": "Last seen", "pupil": "Pupil",
                               "category": "Category", "status": "Status"}
MAX_SEARCH = 100


def encode_key(values: list[Any]) -> str:
    """A page key (ints and strings) as a URL-safe token."""
    raw = json.dumps(values, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_key(token: str, parts: int) -> list[Any] | None:
    """The key in ``token`` if it is one of ``parts`` ints or strings, else None (a bad or
    stale token shows the first page, never an error)."""
    if not token or len(token) > 2000:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(values, list) or len(values) != parts:
        return None
    ok = all((isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**63)
             or isinstance(v, str) for v in values)
    return values if ok else None


def like_pattern(text: str) -> str:
    """``%text%`` for LIKE ... ESCAPE '\\', with the wildcards in ``text`` taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


_like = like_pattern


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
    mine: str = ""           # '1': only items assigned to me
    q: str = ""              # search over matched text, context and window titles
    sort: str = "priority"   # one of SORT_LABELS
    dir: str = ""            # asc | desc ('' = the sort's natural direction)
    after: str = ""          # page key: the page starts after this row ...
    before: str = ""         # ... or ends before this one
    page: int = 1            # the page's number, for display (pages are found by key)

    @classmethod
    def from_query(cls, q: Mapping[str, str]) -> QueueFilters:
        """From a query string; bad values fall back to the defaults (never an error)."""
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in q:
                kw[f.name] = q[f.name].strip()[:2000 if f.name in ("after", "before") else 200]
        page = str(kw.get("page", "1"))
        kw["page"] = max(1, min(int(page), MAX_PAGE)) if page.isdigit() and len(page) < 8 else 1
        if kw.get("status", "open") not in ("open", "all", *STATUSES):
            kw["status"] = "open"
        sev = str(kw.get("severity", ""))
        if sev and not (sev.isdigit() and len(sev) <= 2):
            kw["severity"] = ""
        if kw.get("sort", "priority") not in SORT_LABELS:
            kw["sort"] = "priority"
        if kw.get("dir", "") not in ("", "asc", "desc"):
            kw["dir"] = ""
        if kw.get("mine", "") not in ("", "1"):
            kw["mine"] = ""
        kw["q"] = str(kw.get("q", ""))[:MAX_SEARCH]
        if not kw.get("after") and not kw.get("before"):
            kw["page"] = 1  # an old ?page=N link without a key: the first page, by key
        return cls(**kw)

    @property
    def descending(self) -> bool:
        if self.dir:
            return self.dir == "desc"
        return self.sort in ("priority", "severity", "last_seen")

    def query_string(self, **override: Any) -> str:
        values = {f.name: getattr(self, f.name) for f in fields(self)} | override
        defaults = {"status": None, "sort": "priority", "page": 1}
        return urlencode({k: v for k, v in values.items()
                          if v not in ("", None) and defaults.get(k, object()) != v})

    def sort_link(self, sort: str) -> str:
        """The query string that sorts by ``sort`` (again: the other way round)."""
        if sort == self.sort:
            return self.query_string(dir="asc" if self.descending else "desc", after="",
                                     before="", page=1)
        return self.query_string(sort=sort, dir="", after="", before="", page=1)


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
    pupil_username: str     # '' when restricted (no link to the pupil's page)
    device: str
    match: str
    assignee: str           # the assignee's name ('' = nobody)
    why: list[tuple[str, int]]  # the priority's parts: (part, points), see priority_parts


@dataclass(frozen=True)
class QueuePage:
    rows: list[QueueRow]
    total: int
    next_key: str           # '' = no next page
    prev_key: str           # '' = no previous page


def priority_parts(item: Mapping[str, Any], facts: Mapping[str, Any] | None,
                   policy: triage.TriagePolicy) -> list[tuple[str, int]]:
    """The item's priority in triage's parts, as (part, points): ``severity`` (x 20),
    ``repetition``, ``escalation``, ``late_night``, ``exact``; what the facts cannot explain
    is ``later`` (later captures of the item raised it) or ``changed`` (its history has
    changed since). Parts worth nothing are left out, except severity."""
    sev = min(max(int(item["severity"]), 1), 5)
    earlier = int(facts["earlier"]) if facts else 0
    others = int(facts["other_categories"]) if facts else 0
    late = triage.is_late_night(int(item["first_time_ms"]), policy)
    exact = facts is not None and facts.get("match_kind") == "exact"
    parts = [("severity", sev * 20),
             ("repetition", min(max(earlier, 0), 10) * 2),
             ("escalation", min(max(others, 0), 3) * 5),
             ("late_night", 10 if late else 0),
             ("exact", 5 if exact else 0)]
    rest = int(item["priority"]) - sum(p for _, p in parts)
    if rest:
        parts.append(("later" if rest > 0 else "changed", rest))
    return [(key, points) for key, points in parts if points or key == "severity"]


class QueueService:
    def __init__(self, store: ConsoleRepos, clock: Callable[[], float],
                 accounts: AccountsService,
                 policy: triage.TriagePolicy | None = None) -> None:
        self.store = store
        self.clock = clock
        self.accounts = accounts
        self.policy = policy or triage.TriagePolicy()

    def _query(self, user: User, f: QueueFilters, sites: list[str]) -> QueueQuery:
        chosen = [f.site] if f.site in sites else sites
        statuses = (sorted(OPEN_STATUSES) if f.status == "open"
                    else [f.status] if f.status in STATUSES else [])
        users = devices = None
        if f.pupil:  # resolve names first: a correlated sub-query per row is far too slow
            users = sorted({f.pupil} | set(self.store.pupils_named_like(chosen, _like(f.pupil))))
        if f.device:
            devices = sorted({f.device} | set(self.store.devices_named(chosen, f.device)))
        # search reads capture content: only for roles that may see it
        search = _like(f.q) if f.q and user.can("capture") else None
        return QueueQuery(
            sites=chosen, statuses=statuses, category=f.category,
            min_severity=int(f.severity) if f.severity.isdigit() else None,
            os_users=users, device_ids=devices, start_ms=parse_date(f.date_from),
            end_ms=parse_date(f.date_to, end=True),
            assignee=user.username if f.mine else None, search=search)

    def page(self, user: User, f: QueueFilters) -> tuple[list[QueueRow], int]:
        """One page of the queue the user may see, and how many items match in total."""
        got = self.keyset_page(user, f)
        return got.rows, got.total

    def keyset_page(self, user: User, f: QueueFilters) -> QueuePage:
        """One page of the queue the user may see, by key: the page after ``f.after`` or
        before ``f.before`` (the first page without either), with the keys of the pages
        either side."""
        self.accounts.require(user, "queue")
        sites = self.accounts.sites_of(user)
        if not sites:
            return QueuePage([], 0, "", "")
        q = self._query(user, f, sites)
        total = self.store.queue_count(q)
        nkeys = len(SORTS[f.sort])
        after = decode_key(f.after, nkeys)
        before = decode_key(f.before, nkeys) if after is None else None
        raw = self.store.queue_rows(q, PAGE_SIZE + 1, sort=f.sort, descending=f.descending,
                                    after=after, before=before)
        more = len(raw) > PAGE_SIZE
        # the extra row, if any, is the one farthest from the key
        raw = (raw[1:] if more else raw) if before is not None else raw[:PAGE_SIZE]
        keys = [[r[f"k{i}"] for i in range(nkeys)] for r in raw]
        has_prev = (more if before is not None else after is not None) and bool(raw)
        has_next = (more if before is None else True) and bool(raw)
        facts = self.store.priority_facts([r["id"] for r in raw], triage.DAY_MS)
        names = self.store.staff_names({r["assignee"] for r in raw if r["assignee"]})
        out = []
        for r in raw:
            restricted = is_illegal(r["category"], r["refer_police"])
            host = r["hostname"] or r["c_hostname"] or r["device_id"][:12]
            out.append(QueueRow(
                id=r["id"], site_id=r["site_id"], pinned=bool(r["pinned"]),
                restricted=restricted, severity=r["severity"], priority=r["priority"],
                category=r["category"], category_label=category_label(r["category"]),
                status=r["status"], status_label=STATUS_LABELS.get(r["status"], r["status"]),
                count=r["count"], last_time=fmt_time(r["last_time_ms"]),
                pupil="Restricted" if restricted else (r["display_name"] or r["os_user"]),
                pupil_username="" if restricted else r["os_user"],
                device="Restricted" if restricted else
                (f"{r['room']} · {host}" if r["room"] else host),
                match="" if restricted else (r["match"] or "")[:80],
                assignee=names.get(r["assignee"], r["assignee"]) if r["assignee"] else "",
                why=priority_parts(r, facts.get(r["id"]), self.policy),
            ))
        return QueuePage(out, total, encode_key(keys[-1]) if has_next else "",
                         encode_key(keys[0]) if has_prev else "")
