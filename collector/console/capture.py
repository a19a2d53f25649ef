"""One queue item ("a capture"): access checks, actions, four-eyes unlocks, precision stats."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from collector.domain.lifecycle import transition

from .audit import audit
from .auth import CONTENT_ROLES, User
from .labels import ACTIONS, STATUSES, category_label, fmt_time, is_illegal

__all__ = [
    "UNLOCK_MS",
    "BadAction",
    "ItemView",
    "Refused",
    "act",
    "approve_unlock",
    "load_item",
    "pending_approvals",
    "request_unlock",
    "rule_precision",
    "screenshot_path",
]

UNLOCK_MS = 60 * 60 * 1000        # how long an approved four-eyes unlock lasts
UNLOCK_REQUEST_MS = 24 * 3600 * 1000
MAX_NOTE = 4000


class Refused(Exception):
    """The user may not do this. ``status`` is the HTTP status to answer with (403 or 404)."""

    def __init__(self, status: int, reason: str, site_id: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.site_id = site_id


class BadAction(ValueError):
    """A form value the console does not accept (names the field)."""


@dataclass
class ItemView:
    item: dict[str, Any]
    restricted: bool
    unlocked: bool
    captures: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    pupil: str = ""
    year_group: str = ""
    device: str = ""
    room: str = ""
    my_unlock: dict[str, Any] | None = None
    assignees: list[str] = field(default_factory=list)


def _item_row(conn: sqlite3.Connection, user: User, qid: int) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM queue_items WHERE id = ?", (qid,)).fetchone()
    if row is None:
        raise Refused(404, "no such item")
    if not user.has_site(row["site_id"]):
        # 404, not 403: do not confirm that another school's item exists.
        raise Refused(404, "item belongs to another site", row["site_id"])
    if user.role not in CONTENT_ROLES:
        raise Refused(403, f"role {user.role} may not see capture content", row["site_id"])
    return dict(row)


def is_unlocked(conn: sqlite3.Connection, user: User, qid: int, now_ms: int) -> bool:
    return conn.execute(
        "SELECT 1 FROM console_unlocks WHERE queue_item_id = ? AND requested_by = ? "
        "AND approved_by IS NOT NULL AND expires_at > ?", (qid, user.username, now_ms),
    ).fetchone() is not None


def load_item(conn: sqlite3.Connection, user: User, qid: int, now_ms: int) -> ItemView:
    """Everything the capture page shows; raises Refused. Illegal imagery: see ``restricted``."""
    item = _item_row(conn, user, qid)
    restricted = is_illegal(item["category"], item["refer_police"])
    unlocked = restricted and is_unlocked(conn, user, qid, now_ms)
    view = ItemView(item=item, restricted=restricted, unlocked=unlocked)
    item["category_label"] = category_label(item["category"])
    item["status_label"] = STATUSES.get(item["status"], item["status"])
    item["first_time"] = fmt_time(item["first_time_ms"], seconds=True)
    item["last_time"] = fmt_time(item["last_time_ms"], seconds=True)
    if restricted:
        view.my_unlock = _my_unlock(conn, user, qid, now_ms)
        if not unlocked:
            return view
    pupil = conn.execute("SELECT display_name, year_group FROM pupils WHERE site_id = ? "
                         "AND username = ?", (item["site_id"], item["os_user"])).fetchone()
    device = conn.execute("SELECT hostname, room FROM devices WHERE id = ?",
                          (item["device_id"],)).fetchone()
    view.pupil = pupil["display_name"] if pupil else ""
    view.year_group = pupil["year_group"] if pupil else ""
    view.device = device["hostname"] if device else ""
    view.room = (device["room"] or "") if device else ""
    cols = ("id, time_ms, last_time_ms, count, source, rule_id, severity, hostname, os_user, "
            "rules_version, match_kind")
    if not restricted:  # illegal imagery: metadata only, never content or screenshots
        # reasons quote the matched phrases: content, so never for illegal imagery either
        cols += (", match, context, window_title, process, reasons, score, "
                 "screenshot_path IS NOT NULL AS has_shot")
    for c in conn.execute(f"SELECT {cols} FROM captures WHERE queue_item_id = ? "
                          "ORDER BY time_ms DESC LIMIT 50", (qid,)):
        d = dict(c)
        d["time"] = fmt_time(d["time_ms"], seconds=True)
        d["reasons"] = _reasons(d.get("reasons"))
        d["detector"] = "learned scorer" if d["rule_id"].startswith("model.") else "rule"
        view.captures.append(d)
    if not view.device and view.captures:
        view.device = view.captures[0]["hostname"]
    for a in conn.execute("SELECT actor, action, note, at FROM queue_actions "
                          "WHERE queue_item_id = ? ORDER BY at, id", (qid,)):
        d = dict(a)
        d["time"] = fmt_time(d["at"])
        d["label"] = _action_label(d["action"])
        view.actions.append(d)
    view.assignees = [r[0] for r in conn.execute(
        "SELECT username FROM users WHERE disabled_at IS NULL AND role IN ('dsl', 'deputy_dsl') "
        "AND (sites LIKE ? ) ORDER BY username", (f'%"{item["site_id"]}"%',))]
    return view


def _reasons(raw: str | None) -> list[str]:
    """The stored reasons (a JSON list of strings); anything else shows as no reasons."""
    try:
        got = json.loads(raw or "[]")
    except ValueError:
        return []
    return [str(r) for r in got if isinstance(r, str)] if isinstance(got, list) else []


def _action_label(action: str) -> str:
    if action.startswith("status:"):
        return "Status: " + STATUSES.get(action[7:], action[7:])
    if action.startswith("assign:"):
        return "Assigned to " + action[7:]
    if action == "note":
        return "Note"
    return ACTIONS.get(action, action)


def _my_unlock(conn: sqlite3.Connection, user: User, qid: int,
               now_ms: int) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT * FROM console_unlocks WHERE queue_item_id = ? AND requested_by = ? "
        "AND (approved_by IS NULL AND requested_at > ? OR expires_at > ?) "
        "ORDER BY id DESC LIMIT 1", (qid, user.username, now_ms - UNLOCK_REQUEST_MS, now_ms),
    ).fetchone()
    return dict(row) if row else None


def act(conn: sqlite3.Connection, user: User, qid: int, op: str, value: str, note: str,
        now_ms: int) -> str:
    """Record one DSL action on an item; returns the queue_actions action id. Audited."""
    item = _item_row(conn, user, qid)
    if is_illegal(item["category"], item["refer_police"]) and not is_unlocked(
            conn, user, qid, now_ms):
        raise Refused(403, "illegal-imagery item: needs a four-eyes unlock first",
                      item["site_id"])
    note = note.strip()
    if len(note) > MAX_NOTE:
        raise BadAction(f"note: at most {MAX_NOTE} characters")
    sets: dict[str, Any] = {"updated_at": now_ms}
    if op == "action":
        if value not in ACTIONS:
            raise BadAction(f"action: {value!r} is not in the response matrix")
        action = value
        if item["status"] == "new":
            sets["status"] = "in_review"
    elif op == "status":
        try:
            change = transition(item["status"], value, now_ms, item["closed_at"])
        except ValueError as exc:
            raise BadAction(f"status: {exc}") from exc
        action = f"status:{value}"
        sets["status"] = value
        sets["closed_at"] = change.closed_at
    elif op == "assign":
        if value and value not in load_item(conn, user, qid, now_ms).assignees:
            raise BadAction(f"assignee: {value!r} is not a DSL or deputy DSL of this site")
        action = f"assign:{value or 'nobody'}"
        sets["assignee"] = value or None
    elif op == "note":
        if not note:
            raise BadAction("note: write something first")
        action = "note"
    else:
        raise BadAction(f"op: {op!r} is not action, status, assign or note")
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "INSERT INTO queue_actions (queue_item_id, actor, action, note, at) "
            "VALUES (?, ?, ?, ?, ?)", (qid, user.username, action, note, now_ms))
        assignments = ", ".join(f"{k} = ?" for k in sets)
        conn.execute(f"UPDATE queue_items SET {assignments} WHERE id = ?", [*sets.values(), qid])
        audit(conn, now_ms, user.username, f"capture.{op}", f"queue_item:{qid}",
              item["site_id"], {"value": value if op != "note" else "", "note_chars": len(note)})
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return action


def screenshot_path(conn: sqlite3.Connection, user: User, qid: int, capture_id: str) -> str:
    """The stored (encrypted) screenshot path for a capture of this item; raises Refused."""
    item = _item_row(conn, user, qid)
    if is_illegal(item["category"], item["refer_police"]):
        raise Refused(403, "illegal-imagery items never have screenshots", item["site_id"])
    row = conn.execute("SELECT screenshot_path FROM captures WHERE id = ? AND queue_item_id = ?",
                       (capture_id, qid)).fetchone()
    if row is None or not row[0]:
        raise Refused(404, "no screenshot for this capture", item["site_id"])
    return str(row[0])


def request_unlock(conn: sqlite3.Connection, user: User, qid: int, reason: str,
                   now_ms: int) -> int:
    """A DSL asks to open an illegal-imagery item's metadata (four-eyes, step 1). Audited."""
    item = _item_row(conn, user, qid)
    if not is_illegal(item["category"], item["refer_police"]):
        raise BadAction("this item is not restricted; no unlock needed")
    existing = _my_unlock(conn, user, qid, now_ms)
    if existing:
        return int(existing["id"])
    cur = conn.execute(
        "INSERT INTO console_unlocks (queue_item_id, site_id, requested_by, requested_at, reason)"
        " VALUES (?, ?, ?, ?, ?)", (qid, item["site_id"], user.username, now_ms, reason[:500]))
    uid = int(cur.lastrowid or 0)
    audit(conn, now_ms, user.username, "unlock.request", f"queue_item:{qid}", item["site_id"],
          {"unlock_id": uid})
    return uid


def pending_approvals(conn: sqlite3.Connection, user: User, now_ms: int) -> list[dict[str, Any]]:
    if user.role not in CONTENT_ROLES:
        return []
    out = []
    for r in conn.execute(
            "SELECT u.*, q.category FROM console_unlocks u JOIN queue_items q "
            "ON q.id = u.queue_item_id WHERE u.approved_by IS NULL AND u.requested_by != ? "
            "AND u.requested_at > ? ORDER BY u.id", (user.username, now_ms - UNLOCK_REQUEST_MS)):
        if user.has_site(r["site_id"]):
            d = dict(r)
            d["time"] = fmt_time(d["requested_at"])
            d["category_label"] = category_label(d["category"])
            out.append(d)
    return out


def approve_unlock(conn: sqlite3.Connection, user: User, unlock_id: int, now_ms: int) -> int:
    """A second, different senior user confirms (four-eyes, step 2). Returns the item id."""
    row = conn.execute("SELECT * FROM console_unlocks WHERE id = ?", (unlock_id,)).fetchone()
    if row is None or not user.has_site(row["site_id"]):
        raise Refused(404, "no such unlock request", row["site_id"] if row else None)
    if user.role not in CONTENT_ROLES:
        raise Refused(403, f"role {user.role} may not approve", row["site_id"])
    if row["requested_by"] == user.username:
        raise Refused(403, "four-eyes: a different senior user must approve", row["site_id"])
    if row["approved_by"] is not None or row["requested_at"] <= now_ms - UNLOCK_REQUEST_MS:
        raise BadAction("this request is already approved or has lapsed")
    conn.execute("UPDATE console_unlocks SET approved_by = ?, approved_at = ?, expires_at = ? "
                 "WHERE id = ?", (user.username, now_ms, now_ms + UNLOCK_MS, unlock_id))
    audit(conn, now_ms, user.username, "unlock.approve", f"queue_item:{row['queue_item_id']}",
          row["site_id"], {"unlock_id": unlock_id, "requested_by": row["requested_by"]})
    return int(row["queue_item_id"])


def rule_precision(conn: sqlite3.Connection, sites: list[str]) -> list[dict[str, Any]]:
    """Per rule: items, reviewed, false positives, precision = 1 - FP/reviewed. No content."""
    if not sites:
        return []
    marks = ",".join("?" * len(sites))
    out = []
    for r in conn.execute(
            f"SELECT rule_id, category, count(*) AS total, "
            f"sum(status IN ('actioned', 'closed', 'false_positive')) AS reviewed, "
            f"sum(status = 'false_positive') AS false_positives "
            f"FROM queue_items WHERE site_id IN ({marks}) GROUP BY rule_id, category "
            f"ORDER BY false_positives DESC, total DESC", sites):
        d = dict(r)
        d["precision"] = (1 - d["false_positives"] / d["reviewed"]) if d["reviewed"] else None
        d["category_label"] = category_label(d["category"])
        out.append(d)
    return out
