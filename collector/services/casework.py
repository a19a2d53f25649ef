"""Casework on one queue item ("a capture"): what the capture page shows, the DSL's actions,
notes, status changes and assignment, screenshots, four-eyes unlocks for illegal imagery, and
the rule-precision counts technicians tune rules with.

Authorisation first, always: another site's item is "not found" (never "forbidden", so its
existence is not confirmed); only DSLs and deputy DSLs see content; illegal-imagery items show
metadata only until a second senior user approves an unlock, and never have screenshots.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from collector.domain.lifecycle import transition
from collector.domain.vocabulary import ACTIONS, STATUS_LABELS, category_label, is_illegal
from collector.services._text import fmt_time
from collector.services.accounts import CONTENT_ROLES, AccountsService, BadInput, Refused, User
from collector.services.audit import AuditLog
from collector.store.repos.console import ConsoleRepos

__all__ = ["MAX_ID", "MAX_NOTE", "UNLOCK_MS", "CaseworkService", "ItemView", "action_label",
           "valid_id"]

UNLOCK_MS = 60 * 60 * 1000        # how long an approved four-eyes unlock lasts
UNLOCK_REQUEST_MS = 24 * 3600 * 1000
MAX_NOTE = 4000
MAX_ID = 2**63 - 1                # the largest id either backend stores


def valid_id(value: int) -> bool:
    """Whether ``value`` can be a stored row id (larger ones are simply not found)."""
    return 0 < value <= MAX_ID


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


def _reasons(raw: str | None) -> list[str]:
    """The stored reasons (a JSON list of strings); anything else shows as no reasons."""
    try:
        got = json.loads(raw or "[]")
    except ValueError:
        return []
    return [str(r) for r in got if isinstance(r, str)] if isinstance(got, list) else []


def action_label(action: str) -> str:
    """A recorded action id as the DSL reads it ('status:closed' -> 'Status: Closed')."""
    if action.startswith("status:"):
        return "Status: " + STATUS_LABELS.get(action[7:], action[7:])
    if action.startswith("assign:"):
        return "Assigned to " + action[7:]
    if action == "note":
        return "Note"
    return ACTIONS.get(action, action)


class CaseworkService:
    def __init__(self, store: ConsoleRepos, clock: Callable[[], float],
                 accounts: AccountsService, audit: AuditLog) -> None:
        self.store = store
        self.clock = clock
        self.accounts = accounts
        self.audit = audit

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def item(self, user: User, qid: int) -> dict[str, Any]:
        """The item row if the user may work on it; raises Refused (404 for another site's)."""
        row = self.store.queue_item(qid) if valid_id(qid) else None
        if row is None:
            raise Refused(404, "no such item")
        if not user.has_site(row["site_id"]):
            raise Refused(404, "item belongs to another site", row["site_id"])
        if user.role not in CONTENT_ROLES:
            raise Refused(403, f"role {user.role} may not see capture content", row["site_id"])
        return row

    def _unlocked(self, user: User, qid: int, now: int) -> bool:
        return self.store.unlock_active(qid, user.username, now)

    def load_item(self, user: User, qid: int) -> ItemView:
        """Everything the capture page shows; raises Refused. Illegal imagery: ``restricted``."""
        now = self._now()
        item = self.item(user, qid)
        restricted = is_illegal(item["category"], item["refer_police"])
        unlocked = restricted and self._unlocked(user, qid, now)
        view = ItemView(item=item, restricted=restricted, unlocked=unlocked)
        item["category_label"] = category_label(item["category"])
        item["status_label"] = STATUS_LABELS.get(item["status"], item["status"])
        item["first_time"] = fmt_time(item["first_time_ms"], seconds=True)
        item["last_time"] = fmt_time(item["last_time_ms"], seconds=True)
        if restricted:
            view.my_unlock = self.store.latest_unlock(qid, user.username, now,
                                                      now - UNLOCK_REQUEST_MS)
            if not unlocked:
                return view
        pupil = self.store.pupil_brief(item["site_id"], item["os_user"])
        device = self.store.device_brief(item["device_id"])
        view.pupil = pupil["display_name"] if pupil else ""
        view.year_group = (pupil["year_group"] or "") if pupil else ""
        view.device = device["hostname"] if device else ""
        view.room = (device["room"] or "") if device else ""
        # illegal imagery: metadata only, never content, reasons (they quote) or screenshots
        for c in self.store.item_captures(qid, content=not restricted):
            c["time"] = fmt_time(c["time_ms"], seconds=True)
            c["reasons"] = _reasons(c.get("reasons"))
            c["detector"] = "learned scorer" if c["rule_id"].startswith("model.") else "rule"
            view.captures.append(c)
        if not view.device and view.captures:
            view.device = view.captures[0]["hostname"]
        for a in self.store.item_actions(qid):
            a["time"] = fmt_time(a["at"])
            a["label"] = action_label(a["action"])
            view.actions.append(a)
        view.assignees = self.store.site_assignees(item["site_id"])
        return view

    def act(self, user: User, qid: int, op: str, value: str, note: str) -> str:
        """Record one DSL action on an item; returns the recorded action id. Audited in the
        same transaction."""
        now = self._now()
        item = self.item(user, qid)
        if is_illegal(item["category"], item["refer_police"]) and not self._unlocked(
                user, qid, now):
            raise Refused(403, "illegal-imagery item: needs a four-eyes unlock first",
                          item["site_id"])
        note = note.strip()
        if len(note) > MAX_NOTE:
            raise BadInput(f"note: at most {MAX_NOTE} characters")
        changes: dict[str, Any] = {"updated_at": now}
        if op == "action":
            if value not in ACTIONS:
                raise BadInput(f"action: {value!r} is not in the response matrix")
            action = value
            if item["status"] == "new":
                change = transition(item["status"], "in_review", now, item["closed_at"])
                changes["status"] = change.new
                changes["closed_at"] = change.closed_at
        elif op == "status":
            try:
                change = transition(item["status"], value, now, item["closed_at"])
            except ValueError as exc:
                raise BadInput(f"status: {exc}") from exc
            action = f"status:{value}"
            changes["status"] = value
            changes["closed_at"] = change.closed_at
        elif op == "assign":
            if value and value not in self.store.site_assignees(item["site_id"]):
                raise BadInput(f"assignee: {value!r} is not a DSL or deputy DSL of this site")
            action = f"assign:{value or 'nobody'}"
            changes["assignee"] = value or None
        elif op == "note":
            if not note:
                raise BadInput("note: write something first")
            action = "note"
        else:
            raise BadInput(f"op: {op!r} is not action, status, assign or note")
        with self.store.atomic():
            self.store.record_action(qid, actor=user.username, action=action, note=note,
                                     now_ms=now, item_changes=changes)
            self.audit.record(user.username, f"capture.{op}", f"queue_item:{qid}",
                              item["site_id"], now_ms=now,
                              value=value if op != "note" else "", note_chars=len(note))
        return action

    def screenshot(self, user: User, qid: int, capture_id: str) -> tuple[str, str]:
        """(stored encrypted screenshot path, site id) for a capture of this item; raises
        Refused (illegal-imagery items never have screenshots)."""
        item = self.item(user, qid)
        self.accounts.require(user, "screenshot", item["site_id"])
        if is_illegal(item["category"], item["refer_police"]):
            raise Refused(403, "illegal-imagery items never have screenshots", item["site_id"])
        path = self.store.capture_screenshot(qid, capture_id[:100])
        if path is None:
            raise Refused(404, "no screenshot for this capture", item["site_id"])
        return path, str(item["site_id"])

    def request_unlock(self, user: User, qid: int, reason: str) -> int:
        """A DSL asks to open an illegal-imagery item's metadata (four-eyes, step 1). Audited."""
        now = self._now()
        item = self.item(user, qid)
        if not is_illegal(item["category"], item["refer_police"]):
            raise BadInput("this item is not restricted; no unlock needed")
        existing = self.store.latest_unlock(qid, user.username, now, now - UNLOCK_REQUEST_MS)
        if existing:
            return int(existing["id"])
        with self.store.atomic():
            uid = self.store.add_unlock(qid=qid, site_id=item["site_id"],
                                        requested_by=user.username, now_ms=now,
                                        reason=reason[:500])
            self.audit.record(user.username, "unlock.request", f"queue_item:{qid}",
                              item["site_id"], now_ms=now, unlock_id=uid)
        return uid

    def pending_approvals(self, user: User) -> list[dict[str, Any]]:
        """Requests from other senior users of the user's sites, awaiting a second person."""
        if user.role not in CONTENT_ROLES:
            return []
        now = self._now()
        out = []
        for r in self.store.pending_unlocks(self.accounts.sites_of(user), user.username,
                                            now - UNLOCK_REQUEST_MS):
            r["time"] = fmt_time(r["requested_at"])
            r["category_label"] = category_label(r["category"])
            out.append(r)
        return out

    def approve_unlock(self, user: User, unlock_id: int) -> int:
        """A second, different senior user confirms (four-eyes, step 2). Returns the item id."""
        now = self._now()
        row = self.store.unlock_row(unlock_id) if valid_id(unlock_id) else None
        if row is None or not user.has_site(row["site_id"]):
            raise Refused(404, "no such unlock request", row["site_id"] if row else None)
        if user.role not in CONTENT_ROLES:
            raise Refused(403, f"role {user.role} may not approve", row["site_id"])
        if row["requested_by"] == user.username:
            raise Refused(403, "four-eyes: a different senior user must approve", row["site_id"])
        if row["approved_by"] is not None or row["requested_at"] <= now - UNLOCK_REQUEST_MS:
            raise BadInput("this request is already approved or has lapsed")
        with self.store.atomic():
            if not self.store.approve_unlock_row(unlock_id, user.username, now,
                                                 now + UNLOCK_MS):
                raise BadInput("this request is already approved or has lapsed")
            self.audit.record(user.username, "unlock.approve",
                              f"queue_item:{row['queue_item_id']}", row["site_id"], now_ms=now,
                              unlock_id=unlock_id, requested_by=row["requested_by"])
        return int(row["queue_item_id"])

    def rule_precision(self, user: User) -> list[dict[str, Any]]:
        """Per rule of the user's sites: items, reviewed, false positives and precision
        (1 - FP/reviewed). Counts only, no content: for technicians."""
        self.accounts.require(user, "rule_stats")
        sites = self.accounts.sites_of(user)
        out = []
        for r in self.store.rule_precision_rows(sites) if sites else []:
            r["precision"] = (1 - r["false_positives"] / r["reviewed"]) if r["reviewed"] else None
            r["category_label"] = category_label(r["category"])
            out.append(r)
        return out

    def rule_versions(self, user: User) -> list[dict[str, Any]]:
        """The newest published rule versions (technicians)."""
        self.accounts.require(user, "rule_stats")
        return self.store.rule_version_history()
