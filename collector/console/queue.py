"""The DSL queue: filters and the page query (pinned, then priority, then time)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .auth import User
from .labels import STATUSES, category_label, fmt_time, is_illegal, parse_date

__all__ = ["PAGE_SIZE", "QueueFilters", "QueueRow", "queue_page", "user_sites"]

PAGE_SIZE = 50


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
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in q:
                kw[f.name] = q[f.name].strip()[:200]
        try:
            kw["page"] = max(1, min(int(kw.get("page", 1)), 10_000))
        except ValueError:
            kw["page"] = 1
        if kw.get("status", "open") not in ("open", "all", *STATUSES):
            kw["status"] = "open"
        return cls(**kw)

    def query_string(self, **override: Any) -> str:
        from urllib.parse import urlencode
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


def user_sites(conn: sqlite3.Connection, user: User) -> list[str]:
    if user.all_sites:
        return [r[0] for r in conn.execute("SELECT id FROM sites ORDER BY id")]
    return list(user.sites)


def _in(column: str, values: list[str]) -> str:
    return f"{column} IN ({','.join('?' * len(values))})" if values else "0"


def _where(conn: sqlite3.Connection, f: QueueFilters,
           sites: list[str]) -> tuple[str, list[Any]]:
    sql: list[str] = []
    args: list[Any] = []
    chosen = [f.site] if f.site in sites else sites
    sql.append(f"q.site_id IN ({','.join('?' * len(chosen))})")
    args += chosen
    if f.status == "open":
        sql.append("q.status IN ('new', 'in_review')")
    elif f.status in STATUSES:
        sql.append("q.status = ?")
        args.append(f.status)
    if f.category:
        sql.append("q.category = ?")
        args.append(f.category)
    if f.severity.isdigit():
        sql.append("q.severity >= ?")
        args.append(int(f.severity))
    if f.pupil:  # resolve names first: a correlated sub-query per row is far too slow
        like = f.pupil.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        users = {f.pupil} | {r[0] for r in conn.execute(
            f"SELECT username FROM pupils WHERE {_in('site_id', chosen)} "
            "AND display_name LIKE ? ESCAPE '\\' LIMIT 500", [*chosen, f"%{like}%"])}
        sql.append(_in("q.os_user", sorted(users)))
        args += sorted(users)
    if f.device:
        devs = {f.device} | {r[0] for r in conn.execute(
            f"SELECT id FROM devices WHERE hostname = ? AND {_in('site_id', chosen)}",
            [f.device, *chosen])}
        sql.append(_in("q.device_id", sorted(devs)))
        args += sorted(devs)
    start, end = parse_date(f.date_from), parse_date(f.date_to, end=True)
    if start is not None:
        sql.append("q.last_time_ms >= ?")
        args.append(start)
    if end is not None:
        sql.append("q.first_time_ms < ?")
        args.append(end)
    return " AND ".join(sql), args


def queue_page(conn: sqlite3.Connection, user: User, f: QueueFilters) -> tuple[list[QueueRow], int]:
    """One page of the queue the user may see, and how many items match in total."""
    sites = user_sites(conn, user)
    if not sites:
        return [], 0
    where, args = _where(conn, f, sites)
    total = int(conn.execute(f"SELECT count(*) FROM queue_items q WHERE {where}", args)
                .fetchone()[0])
    rows = conn.execute(
        f"""
        SELECT q.*, c.match, c.hostname AS c_hostname, p.display_name, d.room, d.hostname
        FROM (SELECT * FROM queue_items q WHERE {where}
              ORDER BY q.pinned DESC, q.priority DESC, q.last_time_ms DESC, q.id DESC
              LIMIT ? OFFSET ?) q
        LEFT JOIN captures c ON c.id = q.latest_capture_id
        LEFT JOIN pupils p ON p.site_id = q.site_id AND p.username = q.os_user
        LEFT JOIN devices d ON d.id = q.device_id
        ORDER BY q.pinned DESC, q.priority DESC, q.last_time_ms DESC, q.id DESC
        """,
        [*args, PAGE_SIZE, (f.page - 1) * PAGE_SIZE],
    ).fetchall()
    out = []
    for r in rows:
        restricted = is_illegal(r["category"], r["refer_police"])
        host = r["hostname"] or r["c_hostname"] or r["device_id"][:12]
        out.append(QueueRow(
            id=r["id"], site_id=r["site_id"], pinned=bool(r["pinned"]), restricted=restricted,
            severity=r["severity"], priority=r["priority"], category=r["category"],
            category_label=category_label(r["category"]), status=r["status"],
            status_label=STATUSES.get(r["status"], r["status"]), count=r["count"],
            last_time=fmt_time(r["last_time_ms"]),
            pupil="Restricted" if restricted else (r["display_name"] or r["os_user"]),
            device="Restricted" if restricted else
            (f"{r['room']} · {host}" if r["room"] else host),
            match="" if restricted else (r["match"] or "")[:80],
            assignee=r["assignee"] or "",
        ))
    return out, total
