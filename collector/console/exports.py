"""Incident log (CSV + printable HTML) and the CPOMS / MyConcern import CSV.

Every cell is neutralised against CSV injection: a cell that a spreadsheet would read as a
formula (starting with = + - @, tab or carriage return) gets a leading apostrophe.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .labels import ACTIONS, STATUSES, category_label, fmt_time, is_illegal, parse_date

__all__ = ["CPOMS_COLUMNS", "INCIDENT_COLUMNS", "ExportRange", "cpoms_rows", "incident_rows",
           "neutralise", "to_csv"]

INCIDENT_COLUMNS = ("Date and Time", "Name of Pupil or Staff Member", "Room and Device",
                    "Details of Incident", "Actions and Reasons")
CPOMS_COLUMNS = ("Student Username", "Student Name", "Year Group", "Incident Date",
                 "Incident Time", "Category", "Severity", "Incident", "Actions Taken", "Status",
                 "Recorded By", "Vigil Reference")
RESTRICTED_TEXT = ("Illegal imagery category: details withheld by design (four-eyes rule). "
                   "Referred to police.")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> str:
    text = "" if value is None else str(value)
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

    def where(self) -> tuple[str, list[Any]]:
        sql = [f"q.site_id IN ({','.join('?' * len(self.sites))})"]
        args: list[Any] = list(self.sites)
        start, end = parse_date(self.date_from), parse_date(self.date_to, end=True)
        if start is not None:
            sql.append("q.first_time_ms >= ?")
            args.append(start)
        if end is not None:
            sql.append("q.first_time_ms < ?")
            args.append(end)
        return " AND ".join(sql), args


def _items(conn: sqlite3.Connection, rng: ExportRange) -> list[sqlite3.Row]:
    if not rng.sites:
        return []
    where, args = rng.where()
    return conn.execute(
        f"""SELECT q.*, c.match, c.window_title, c.process, c.source, p.display_name,
                   p.year_group, d.room, d.hostname
            FROM queue_items q
            LEFT JOIN captures c ON c.id = q.latest_capture_id
            LEFT JOIN pupils p ON p.site_id = q.site_id AND p.username = q.os_user
            LEFT JOIN devices d ON d.id = q.device_id
            WHERE {where} AND q.status != 'false_positive'
            ORDER BY q.first_time_ms""", args).fetchall()


def _actions(conn: sqlite3.Connection, qid: int) -> list[sqlite3.Row]:
    return conn.execute("SELECT actor, action, note, at FROM queue_actions "
                        "WHERE queue_item_id = ? ORDER BY at, id", (qid,)).fetchall()


def _actions_text(actions: list[sqlite3.Row]) -> str:
    parts = []
    for a in actions:
        act = a["action"]
        label = (ACTIONS.get(act) or ("Status: " + STATUSES.get(act[7:], act[7:])
                 if act.startswith("status:") else act.replace(":", " ").capitalize()))
        text = f"{fmt_time(a['at'])} {a['actor']}: {label}"
        parts.append(text + (f" ({a['note']})" if a["note"] else ""))
    return "; ".join(parts)


def _details(r: sqlite3.Row) -> str:
    where = {"keys": "typed", "window": "in a window title", "media": "on removable media"}
    text = (f"{category_label(r['category'])} (severity {r['severity']}): "
            f"\"{r['match'] or ''}\" {where.get(r['source'] or '', '')}")
    if r["window_title"]:
        text += f"; window \"{r['window_title']}\" ({r['process']})"
    if r["count"] > 1:
        text += f"; repeated {r['count']} times"
    return text + f"; rule {r['rule_id']}"


def incident_rows(conn: sqlite3.Connection, rng: ExportRange) -> list[tuple[str, ...]]:
    """The incident log, one row per queue item, in the seed's five columns."""
    out: list[tuple[str, ...]] = []
    for r in _items(conn, rng):
        when = fmt_time(r["first_time_ms"])
        actions = _actions_text(_actions(conn, r["id"]))
        if is_illegal(r["category"], r["refer_police"]):
            out.append((when, "Restricted", "Restricted", RESTRICTED_TEXT, actions))
            continue
        host = r["hostname"] or r["device_id"][:12]
        out.append((when, r["display_name"] or r["os_user"],
                    f"{r['room']} / {host}" if r["room"] else host, _details(r), actions))
    return out


def cpoms_rows(conn: sqlite3.Connection, rng: ExportRange) -> list[tuple[str, ...]]:
    """Rows for a CPOMS / MyConcern incident import (one per queue item)."""
    out: list[tuple[str, ...]] = []
    for r in _items(conn, rng):
        day, _, time = fmt_time(r["first_time_ms"]).partition(" ")
        acts = _actions(conn, r["id"])
        recorder = acts[0]["actor"] if acts else "Vigil"
        restricted = is_illegal(r["category"], r["refer_police"])
        out.append((
            "" if restricted else r["os_user"],
            "Restricted" if restricted else (r["display_name"] or r["os_user"]),
            "" if restricted else (r["year_group"] or ""),
            day, time, category_label(r["category"]), str(r["severity"]),
            RESTRICTED_TEXT if restricted else _details(r), _actions_text(acts),
            STATUSES.get(r["status"], r["status"]), recorder, f"VIGIL-{r['id']}",
        ))
    return out
