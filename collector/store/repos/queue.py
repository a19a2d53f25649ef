"""The DSL queue page: one query for a page of items the caller may see, pinned first, then
priority, then the newest; and the look-ups that turn the page's filters into ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from collector.store.sql import Db, in_list

__all__ = ["QueueQuery", "QueueRepo"]

_ORDER = "q.pinned DESC, q.priority DESC, q.last_time_ms DESC, q.id DESC"


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
    return " AND ".join(parts), args


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

    def queue_rows(self, q: QueueQuery, limit: int, offset: int) -> list[dict[str, Any]]:
        """One page of matching items with the latest capture's match and hostname, the
        pupil's display name and the device's room and hostname."""
        where, args = _where(q)
        return self.db.rows(
            f"""
            SELECT q.*, c.match, c.hostname AS c_hostname, p.display_name, d.room, d.hostname
            FROM (SELECT * FROM queue_items q WHERE {where} ORDER BY {_ORDER}
                  LIMIT ? OFFSET ?) q
            LEFT JOIN captures c ON c.id = q.latest_capture_id
            LEFT JOIN pupils p ON p.site_id = q.site_id AND p.username = q.os_user
            LEFT JOIN devices d ON d.id = q.device_id
            ORDER BY {_ORDER}
            """, [*args, limit, offset])
