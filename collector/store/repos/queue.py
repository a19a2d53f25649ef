"""The DSL queue page: one query for a page of items the caller may see, in the order they
asked for (pinned first, then priority, then the newest, by default), paginated by key; the
look-ups that turn the page's filters into ids; and the facts behind each item's priority."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from collector.domain.vocabulary import ILLEGAL_CATEGORIES, STATUSES
from collector.store.sql import Db, in_list

__all__ = ["SORTS", "QueueQuery", "QueueRepo"]

_STATUS_RANK = ("CASE q.status " + " ".join(f"WHEN '{s}' THEN {i}" for i, s in
                                            enumerate(STATUSES)) + f" ELSE {len(STATUSES)} END")
_PUPIL_NAME = "COALESCE(p.display_name, q.os_user)"
#: Sort name -> the key's expressions, most significant first; every key ends in q.id, so it
#: is unique and a page can start right after (or before) one row.
SORTS: dict[str, tuple[str, ...]] = {
    "priority": ("q.pinned", "q.priority", "q.last_time_ms", "q.id"),
    "severity": ("q.severity", "q.last_time_ms", "q.id"),
    "last_seen": ("q.last_time_ms", "q.id"),
    "pupil": (_PUPIL_NAME, "q.id"),
    "category": ("q.category", "q.id"),
    "status": (_STATUS_RANK, "q.id"),
}
_ILLEGAL = sorted(ILLEGAL_CATEGORIES)


@dataclass(frozen=True)
class QueueQuery:
    """Resolved filters: every list is already scoped to what the user may see."""

    sites: list[str]
    statuses: list[str] = field(default_factory=list)   # empty: any status
    category: str = ""
    min_severity: int | None = None
    os_users: list[str] | None = None                     # None: any pupil
    device_ids: list[str] | None = None                   # None: any device
    start_ms: int | None = None                           # item last seen at or after
    end_ms: int | None = None                             # item first seen before
    assignee: str | None = None                           # None: anyone or nobody
    search: str | None = None    # LIKE pattern over match, context and window title; never
                                 # matches an illegal-imagery item


def _where(q: QueueQuery) -> tuple[str, list[Any]]:
    parts: list[str] = []
    args: list[Any] = []

    def add(sql: str, values: list[Any]) -> None:
        parts.append(sql)
        args.extend(values)

    add(*in_list("q.site_id", q.sites))
    if q.statuses:
        add(*in_list("q.status", q.statuses))
    if q.category:
        add("q.category = ?", [q.category])
    if q.min_severity is not None:
        add("q.severity >= ?", [q.min_severity])
    if q.os_users is not None:
        add(*in_list("q.os_user", q.os_users))
    if q.device_ids is not None:
        add(*in_list("q.device_id", q.device_ids))
    if q.start_ms is not None:
        add("q.last_time_ms >= ?", [q.start_ms])
    if q.end_ms is not None:
        add("q.first_time_ms < ?", [q.end_ms])
    if q.assignee is not None:
        add("q.assignee = ?", [q.assignee])
    if q.search is not None:
        illegal, ill_args = in_list("q.category", _ILLEGAL)
        add(f"q.refer_police = 0 AND NOT ({illegal}) AND EXISTS (SELECT 1 FROM captures s "
            "WHERE s.queue_item_id = q.id AND (LOWER(s.match) LIKE LOWER(?) ESCAPE '\\' "
            "OR LOWER(s.context) LIKE LOWER(?) ESCAPE '\\' "
            "OR LOWER(s.window_title) LIKE LOWER(?) ESCAPE '\\'))",
            [*ill_args, q.search, q.search, q.search])
    return " AND ".join(parts), args


def _needs_pupils(sort: str) -> bool:
    return sort == "pupil"


class QueueRepo:
    db: Db

    def pupils_named_like(self, sites: list[str], pattern: str,
                          limit: int = 500) -> list[str]:
        """Usernames of pupils of these sites whose display name matches the LIKE
        ``pattern`` (backslash escapes), ignoring ASCII case on both backends (SQLite's LIKE
        does; PostgreSQL's would not)."""
        where, args = in_list("site_id", sites)
        return [str(r["username"]) for r in self.db.rows(
            f"SELECT username FROM pupils WHERE {where} AND LOWER(display_name) LIKE LOWER(?) "
            "ESCAPE '\\' LIMIT ?", [*args, pattern, limit])]

    def devices_named(self, sites: list[str], hostname: str) -> list[str]:
        """Ids of the devices of these sites with this hostname."""
        where, args = in_list("site_id", sites)
        return [str(r["id"]) for r in self.db.rows(
            f"SELECT id FROM devices WHERE hostname = ? AND {where}", [hostname, *args])]

    def queue_count(self, q: QueueQuery) -> int:
        """How many items match."""
        where, args = _where(q)
        return int(self.db.scalar(f"SELECT COUNT(*) FROM queue_items q WHERE {where}", args))

    def queue_rows(self, q: QueueQuery, limit: int, *, sort: str = "priority",
                   descending: bool = True, after: Sequence[Any] | None = None,
                   before: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """One page of matching items in ``sort`` order (``SORTS``), starting right after the
        key ``after`` (next page) or ending right before ``before`` (previous page), never by
        OFFSET; with the latest capture's match, kind and hostname, the pupil's display name
        and the device's room and hostname. Each row carries its key as ``k0``, ``k1``, ..."""
        keys = SORTS[sort]
        where, args = _where(q)
        join = ("LEFT JOIN pupils p ON p.site_id = q.site_id AND p.username = q.os_user"
                if _needs_pupils(sort) else "")
        cols = ", ".join(f"{k} AS k{i}" for i, k in enumerate(keys))
        tup = f"({', '.join(keys)})"
        backwards = before is not None
        if after is not None or before is not None:
            bound = list(before if before is not None else after or ())
            if len(bound) != len(keys):
                raise ValueError("queue key: wrong number of parts")
            # next page: beyond the key in the page's direction; previous page: before it
            op = "<" if descending != backwards else ">"
            where += f" AND {tup} {op} ({', '.join('?' * len(keys))})"
            args += bound
        inner_desc = descending != backwards
        inner = ", ".join(f"k{i} {'DESC' if inner_desc else 'ASC'}" for i in range(len(keys)))
        outer = ", ".join(f"q.k{i} {'DESC' if descending else 'ASC'}" for i in range(len(keys)))
        return self.db.rows(
            f"""
            SELECT q.*, c.match, c.match_kind, c.hostname AS c_hostname,
                   pp.display_name, d.room, d.hostname
            FROM (SELECT q.*, {cols} FROM queue_items q {join} WHERE {where}
                  ORDER BY {inner} LIMIT ?) q
            LEFT JOIN captures c ON c.id = q.latest_capture_id
            LEFT JOIN pupils pp ON pp.site_id = q.site_id AND pp.username = q.os_user
            LEFT JOIN devices d ON d.id = q.device_id
            ORDER BY {outer}
            """, [*args, limit])

    def priority_facts(self, qids: Sequence[int], day_ms: int) -> dict[int, dict[str, Any]]:
        """Per item: what its priority was built from, as triage saw it when the item
        started: the pupil's earlier captures (``earlier``) and other categories
        (``other_categories``) in the day before, from items created before it; and the
        latest capture's match kind."""
        if not qids:
            return {}
        where, args = in_list("q.id", list(qids))
        recent = ("o.site_id = q.site_id AND o.os_user = q.os_user AND o.id < q.id "
                  "AND o.last_time_ms >= q.first_time_ms - ?")
        rows = self.db.rows(
            f"""
            SELECT q.id, q.first_time_ms, c.match_kind,
                   (SELECT COALESCE(SUM(o.count), 0) FROM queue_items o WHERE {recent})
                       AS earlier,
                   (SELECT COUNT(DISTINCT o.category) FROM queue_items o WHERE {recent}
                       AND o.category <> q.category) AS other_categories
            FROM queue_items q LEFT JOIN captures c ON c.id = q.latest_capture_id
            WHERE {where}
            """, [day_ms, day_ms, *args])
        return {int(r["id"]): r for r in rows}
