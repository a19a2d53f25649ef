"""Reading the audit log for the console's audit viewer: filtered, scoped to sites, and
paged by key (``id`` descending, ``before`` the last id shown), never by offset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collector.store.sql import Db, in_list

__all__ = ["AuditQuery", "AuditViewRepo"]


@dataclass(frozen=True)
class AuditQuery:
    """Validated filters (the service checks them); empty strings and None mean "any"."""

    sites: tuple[str, ...] = ()          # rows of these sites ...
    all_sites: bool = False              # ... or every row (a user of every site)
    actor: str = ""
    action: str = ""                     # exact, or a prefix ending in '.' ('export.')
    target: str = ""                     # exact, or a prefix ending in ':' ('queue_item:')
    site: str = ""
    start_ms: int | None = None
    end_ms: int | None = None
    before_id: int | None = None


def _like_prefix(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class AuditViewRepo:
    db: Db

    def audit_page(self, q: AuditQuery, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` audit rows matching ``q``, newest first.

        Rows without a site (log-ins, unfiltered queue views) are in scope when their actor
        is an account of one of ``q.sites``."""
        parts: list[str] = []
        args: list[Any] = []
        if not q.all_sites:
            where, site_args = in_list("a.site_id", list(q.sites))
            likes = " OR ".join("u.sites LIKE ?" for _ in q.sites) or "1 = 0"
            parts.append(f"({where} OR (a.site_id IS NULL AND a.actor IN "
                         f"(SELECT u.username FROM users u WHERE {likes})))")
            args += site_args + [f'%"{s}"%' for s in q.sites]
        if q.site:
            parts.append("a.site_id = ?")
            args.append(q.site)
        if q.actor:
            parts.append("a.actor = ?")
            args.append(q.actor)
        for column, value, sep in (("a.action", q.action, "."), ("a.target", q.target, ":")):
            if not value:
                continue
            if value.endswith(sep):
                # LOWER on both sides: SQLite's LIKE ignores ASCII case, PostgreSQL's does not
                parts.append(f"LOWER({column}) LIKE LOWER(?) ESCAPE '\\'")
                args.append(_like_prefix(value))
            else:
                parts.append(f"{column} = ?")
                args.append(value)
        if q.start_ms is not None:
            parts.append("a.at >= ?")
            args.append(q.start_ms)
        if q.end_ms is not None:
            parts.append("a.at < ?")
            args.append(q.end_ms)
        if q.before_id is not None:
            parts.append("a.id < ?")
            args.append(q.before_id)
        where_sql = " AND ".join(parts) or "1 = 1"
        return self.db.rows(
            "SELECT a.id, a.at, a.actor, a.action, a.target, a.site_id, a.detail FROM audit a "
            f"WHERE {where_sql} ORDER BY a.id DESC LIMIT ?", [*args, limit])
