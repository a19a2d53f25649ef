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
from collector.services.accounts import (
    CONTENT_ROLES,
    SECOND_APPROVER_ROLES,
    AccountsService,
    BadInput,
    Refused,
    User,
)
from collector.services.audit import AuditLog
from collector.services.notifications import Mailer
from collector.store.repos.console import ConsoleRepos

__all__ = ["BULK_STATUSES", "CLOSE_REASONS", "MAX_BULK", "MAX_ID", "MAX_NOTE", "MAX_REASON",
           "REASON_SEVERITY", "UNLOCK_MS", "BulkResult", "CaseworkService", "ItemView",
           "action_label", "media_facts", "valid_id"]

UNLOCK_MS = 60 * 60 * 1000        # how long an approved four-eyes unlock lasts
TIMELINE_EACH_SIDE = 10           # the pupil's other captures shown before and after an item
UNLOCK_REQUEST_MS = 24 * 3600 * 1000
MAX_NOTE = 4000
MAX_ID = 2**63 - 1                # the largest id either backend stores
MAX_REASON = 500
MAX_BULK = 200                    # items one bulk submit may carry
#: Closing an item of at least this severity (as closed or false positive) needs a reason.
REASON_SEVERITY = 4
#: The statuses bulk work may set.
BULK_STATUSES = ("false_positive", "closed")
#: Reasons the action form suggests (any other text is accepted too).
CLOSE_REASONS = (
    "Educational context (lesson, homework or research)",
    "Song lyrics, film, book or game quotation",
    "The rule misread the text",
    "Known and already being handled",
    "Spoken to the pupil: no concern",
    "Duplicate of another item",
)
POLICE_ACTION = "refer_police"    # a DSL may record it on an illegal-imagery item alone


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
    #: username -> display name of every staff member the page shows
    names: dict[str, str] = field(default_factory=dict)
    #: the pupil's captures from other items just before and after this one (newest last)
    before: list[dict[str, Any]] = field(default_factory=list)
    after: list[dict[str, Any]] = field(default_factory=list)
    #: every file name the item's media captures matched
    file_names: list[str] = field(default_factory=list)
    four_eyes: list[dict[str, Any]] = field(default_factory=list)  # the item's four-eyes history
    unlock_until: str = ""           # when the user's approved unlock ends


@dataclass
class BulkResult:
    """What a bulk submit did: the items changed, and each refused item with the reason."""

    status: str
    done: list[int] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n = n / 1000  # type: ignore[assignment]
    return str(n)


def media_facts(raw: str | None) -> dict[str, Any] | None:
    """A capture's stored ``media`` JSON (USB sticks, SD cards) as the page shows it, or
    None; unreadable JSON shows as no media facts."""
    try:
        m = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not isinstance(m, dict):
        return None

    def text(key: str) -> str:
        v = m.get(key)
        return v if isinstance(v, str) else ""

    def num(key: str) -> int:
        v = m.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0

    events = {"mounted": "Mounted", "unmounted": "Removed", "file_written": "File written"}
    return {"event": events.get(text("event"), text("event")), "label": text("label"),
            "fstype": text("fstype"), "size": _size(num("size_bytes")) if num("size_bytes")
            else "", "mount_point": text("mount_point"), "files_written": num("files_written"),
            "file_name": text("file_name")}


def _reasons(raw: str | None) -> list[str]:
    """The stored reasons (a JSON list of strings); anything else shows as no reasons."""
    try:
        got = json.loads(raw or "[]")
    except ValueError:
        return []
    return [str(r) for r in got if isinstance(r, str)] if isinstance(got, list) else []


def timeline_entry(c: dict[str, Any]) -> dict[str, Any]:
    """A capture of the pupil's timeline as the page shows it: restricted ones (illegal
    imagery) with their category only."""
    restricted = bool(c["restricted"])
    return {"queue_item_id": c["queue_item_id"], "restricted": restricted,
            "category_label": category_label(c["category"]),
            "time": "" if restricted else fmt_time(c["time_ms"]),
            "severity": None if restricted else c["severity"],
            "source": "" if restricted else c["source"],
            "status_label": "" if restricted else STATUS_LABELS.get(c["status"], c["status"]),
            "match": "" if restricted else (c["match"] or "")[:80],
            "window_title": "" if restricted else (c["window_title"] or "")[:120],
            "media": None if restricted else media_facts(c.get("media"))}


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
        self.mailer: Mailer | None = None  # set by the console when [smtp] is configured

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
            self._four_eyes_view(view, qid, now)
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
            c["media"] = media_facts(c.get("media"))
            if c["media"] and c["media"]["file_name"] and (
                    c["media"]["file_name"] not in view.file_names):
                view.file_names.append(c["media"]["file_name"])
            view.captures.append(c)
        before, after = self.store.pupil_timeline(item["site_id"], item["os_user"], qid,
                                                  item["first_time_ms"], item["last_time_ms"],
                                                  TIMELINE_EACH_SIDE)
        view.before = [timeline_entry(c) for c in reversed(before)]
        view.after = [timeline_entry(c) for c in after]
        if not view.device and view.captures:
            view.device = view.captures[0]["hostname"]
        for a in self.store.item_actions(qid):
            a["time"] = fmt_time(a["at"])
            a["label"] = action_label(a["action"])
            view.actions.append(a)
        if restricted:  # an unlocked item's history holds its four-eyes events too
            view.actions = sorted(view.actions + view.four_eyes, key=lambda a: a["at"])
        view.assignees = self.store.site_assignees(item["site_id"])
        view.names = self.store.staff_names(
            {a["actor"] for a in view.actions} | set(view.assignees)
            | ({item["assignee"]} if item["assignee"] else set()))
        for a in view.actions:
            a["actor_name"] = view.names.get(a["actor"], a["actor"])
            done = str(a.get("action", ""))
            if done.startswith("assign:") and done[7:] in view.names:
                a["label"] = "Assigned to " + view.names[done[7:]]
        return view

    def act(self, user: User, qid: int, op: str, value: str, note: str,
            reason: str = "") -> str:
        """Record one DSL action on an item; returns the recorded action id. Audited in the
        same transaction. (A status goes through :meth:`submit`, which holds the closing
        rules.)"""
        if op == "status":
            return self.submit(user, qid, status=value or "-", note=note, reason=reason)[0]
        now = self._now()
        item = self.item(user, qid)
        # Recording the police referral needs no content, so a DSL may always do it alone.
        if is_illegal(item["category"], item["refer_police"]) and not (
                op == "action" and value == POLICE_ACTION) and not self._unlocked(
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

    def _may_act(self, user: User, qid: int, item: dict[str, Any], now: int,
                 action: str = "") -> None:
        """Raise Refused unless the user may record ``action`` on this (visible) item:
        illegal imagery needs a four-eyes unlock, except to record the police referral."""
        if is_illegal(item["category"], item["refer_police"]) and action != POLICE_ACTION \
                and not self._unlocked(user, qid, now):
            raise Refused(403, "illegal-imagery item: needs a four-eyes unlock first",
                          item["site_id"])

    def submit(self, user: User, qid: int, *, action: str = "", status: str = "",
               reason: str = "", note: str = "") -> list[str]:
        """The one action form: an action from the response matrix, a status, the reason
        and an optional note, recorded together (one action row per change, each with its
        audit row, in one transaction). Closing a severity 4-5 item, as closed or false
        positive, needs a reason. Returns the recorded action ids; raises BadInput/Refused."""
        now = self._now()
        item = self.item(user, qid)
        action, status = action.strip(), status.strip()
        self._may_act(user, qid, item, now, action if not status else "")
        reason, note = " ".join(reason.split()), note.strip()
        if len(reason) > MAX_REASON:
            raise BadInput(f"reason: at most {MAX_REASON} characters")
        if len(note) > MAX_NOTE:
            raise BadInput(f"note: at most {MAX_NOTE} characters")
        if action and action not in ACTIONS:
            raise BadInput(f"action: {action!r} is not in the response matrix")
        target = status if status and status != item["status"] else ""
        if target:
            try:
                transition(item["status"], target, now, item["closed_at"])
            except ValueError as exc:
                raise BadInput(f"status: {exc}") from exc
        if target in BULK_STATUSES and item["severity"] >= REASON_SEVERITY and not reason:
            raise BadInput(f"reason: closing a severity {item['severity']} item "
                           f"({STATUS_LABELS[target]}) needs a recorded reason; say why")
        if not (action or target or note):
            raise BadInput("nothing to record: choose an action or a status, or write a note")
        records: list[tuple[str, str, str, dict[str, Any], str, str]] = []
        if action:
            changes: dict[str, Any] = {"updated_at": now}
            if item["status"] == "new" and not target:
                change = transition("new", "in_review", now, item["closed_at"])
                changes |= {"status": change.new, "closed_at": change.closed_at}
            records.append((action, note, "" if target else reason, changes, "action", action))
        if target:
            change = transition(item["status"], target, now, item["closed_at"])
            records.append((f"status:{target}", "" if action else note, reason,
                            {"updated_at": now, "status": target,
                             "closed_at": change.closed_at}, "status", target))
        if not records:
            records.append(("note", note, reason, {"updated_at": now}, "note", ""))
        with self.store.atomic():
            for recorded, text, why, changes, op, value in records:
                self.store.record_action(qid, actor=user.username, action=recorded, note=text,
                                         now_ms=now, item_changes=changes, reason=why)
                self.audit.record(user.username, f"capture.{op}", f"queue_item:{qid}",
                                  item["site_id"], now_ms=now, value=value,
                                  note_chars=len(text), reason_chars=len(why))
        return [r[0] for r in records]

    def bulk(self, user: User, qids: list[int], status: str, reason: str,
             note: str = "") -> BulkResult:
        """Mark many items false positive or closed with one reason: each changed item gets
        its own action row and audit row (one transaction). Items the user may not act on,
        illegal-imagery items (one at a time, after four-eyes) and items that already have
        the status are refused, each with its reason, and every refusal is audited."""
        self.accounts.require(user, "queue")
        if status not in BULK_STATUSES:
            raise BadInput("bulk: choose 'false positive' or 'closed'")
        reason, note = " ".join(reason.split()), note.strip()
        if not reason:
            raise BadInput("reason: bulk work needs one reason for every item; say why")
        if len(reason) > MAX_REASON:
            raise BadInput(f"reason: at most {MAX_REASON} characters")
        if len(note) > MAX_NOTE:
            raise BadInput(f"note: at most {MAX_NOTE} characters")
        ids = list(dict.fromkeys(qids))
        if not ids:
            raise BadInput("select at least one item first")
        if len(ids) > MAX_BULK:
            raise BadInput(f"select at most {MAX_BULK} items at once")
        now = self._now()
        out = BulkResult(status)
        accepted: list[tuple[int, dict[str, Any], int | None]] = []
        for qid in ids:
            try:
                item = self.item(user, qid)
            except Refused as e:
                out.refused.append((qid, "not found, or not an item you may act on"))
                self.audit.record(user.username, "capture.bulk_refused", f"queue_item:{qid}",
                                  e.site_id, now_ms=now, reason=e.reason)
                continue
            why = ""
            if is_illegal(item["category"], item["refer_police"]):
                why = ("possible illegal imagery: never closed in bulk; open it on its own "
                       "page (four-eyes) and refer it to the police")
            elif item["status"] == status:
                why = f"already {STATUS_LABELS[status].lower()}"
            if why:
                out.refused.append((qid, why))
                self.audit.record(user.username, "capture.bulk_refused", f"queue_item:{qid}",
                                  item["site_id"], now_ms=now, reason=why)
                continue
            change = transition(item["status"], status, now, item["closed_at"])
            accepted.append((qid, item, change.closed_at))
        with self.store.atomic():
            for qid, item, closed_at in accepted:
                self.store.record_action(qid, actor=user.username, action=f"status:{status}",
                                         note=note, reason=reason, now_ms=now,
                                         item_changes={"updated_at": now, "status": status,
                                                       "closed_at": closed_at})
                self.audit.record(user.username, "capture.status", f"queue_item:{qid}",
                                  item["site_id"], now_ms=now, value=status, bulk=len(ids),
                                  note_chars=len(note), reason_chars=len(reason))
                out.done.append(qid)
        return out

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
        """A DSL asks to open an illegal-imagery item's metadata (four-eyes, step 1). Audited;
        after the commit the site's approvers are emailed a link (when SMTP is set up)."""
        now = self._now()
        item = self.item(user, qid)
        if not is_illegal(item["category"], item["refer_police"]):
            raise BadInput("this item is not restricted; no unlock needed")
        reason = reason.strip()
        if not reason:
            raise BadInput("reason: say why you need the metadata (e.g. police referral)")
        existing = self.store.latest_unlock(qid, user.username, now, now - UNLOCK_REQUEST_MS)
        if existing:
            return int(existing["id"])
        with self.store.atomic():
            uid = self.store.add_unlock(qid=qid, site_id=item["site_id"],
                                        requested_by=user.username, now_ms=now,
                                        reason=reason[:500])
            self.audit.record(user.username, "unlock.request", f"queue_item:{qid}",
                              item["site_id"], now_ms=now, unlock_id=uid)
        self._email_approvers(user, uid, item)
        return uid

    def _approvers(self, site_id: str, not_user: str) -> list[dict[str, Any]]:
        return [a for a in self.store.approvers_of(site_id, sorted(CONTENT_ROLES),
                                                   sorted(SECOND_APPROVER_ROLES))
                if a["username"] != not_user]

    def _email_approvers(self, user: User, uid: int, item: dict[str, Any]) -> None:
        approvers = self._approvers(item["site_id"], user.username)
        to = [a["email"] for a in approvers if a["email"]]
        if self.mailer is None or not self.mailer.enabled or not to:
            return
        site = self.store.site_profile(item["site_id"])
        name = site["name"] if site else item["site_id"]
        text = "\n".join([
            f"{user.display_name} asks a second senior person to approve opening the metadata",
            f"(who, where, when) of an illegal-imagery item at {name}.", "",
            f"Approve or decline it here: {self.mailer.link(f'/approvals/{uid}')}", "",
            "Approving does not show you anything. It lets them see the metadata for "
            f"{UNLOCK_MS // 60_000} minutes.",
            "This email deliberately contains no details of what was typed or seen.", ""])
        error = self.mailer.send(to, f"Vigil: a four-eyes approval is waiting ({name})", text)
        self.audit.record("system", "unlock.email", f"unlock:{uid}", item["site_id"],
                          recipients=len(to), error=error or "")

    def _email_requester(self, row: dict[str, Any], decision: str) -> None:
        if self.mailer is None or not self.mailer.enabled:
            return
        who = self.store.account_brief(row["requested_by"])
        if who is None or not who["email"]:
            return
        qid = row["queue_item_id"]
        text = "\n".join([
            f"Your four-eyes request for item {qid} was {decision}.",
            f"Open it in Vigil: {self.mailer.link(f'/captures/{qid}')}", "",
            "This email deliberately contains no details of what was typed or seen.", ""])
        error = self.mailer.send([who["email"]], f"Vigil: your four-eyes request was {decision}",
                                 text)
        self.audit.record("system", "unlock.email", f"unlock:{row['id']}", row["site_id"],
                          recipients=1, decision=decision, error=error or "")

    def pending_approvals(self, user: User) -> list[dict[str, Any]]:
        """Requests from other people of the user's sites, awaiting a second person."""
        if not user.can("approve"):
            return []
        now = self._now()
        out = []
        for r in self.store.pending_unlocks(self.accounts.sites_of(user), user.username,
                                            now - UNLOCK_REQUEST_MS):
            r["time"] = fmt_time(r["requested_at"])
            r["category_label"] = category_label(r["category"])
            out.append(r)
        return out

    def _decidable(self, user: User, unlock_id: int) -> dict[str, Any]:
        row = self.store.unlock_row(unlock_id) if valid_id(unlock_id) else None
        if row is None or not user.has_site(row["site_id"]):
            raise Refused(404, "no such unlock request", row["site_id"] if row else None)
        if not user.can("approve"):
            raise Refused(403, f"role {user.role} may not approve", row["site_id"])
        return row

    def unlock_request(self, user: User, unlock_id: int) -> dict[str, Any]:
        """One request as its approver sees it (the link in the email and the notification
        list): who asked, why, for which item and category, and where it stands."""
        now = self._now()
        row = self._decidable(user, unlock_id)
        item = self.store.queue_item(int(row["queue_item_id"]))
        site = self.store.site_profile(row["site_id"])
        requester = self.store.account_brief(row["requested_by"])
        lapsed = row["requested_at"] <= now - UNLOCK_REQUEST_MS
        state = ("approved" if row["approved_by"] else "declined" if row["declined_at"]
                 else "lapsed" if lapsed else "pending")
        return {**row, "state": state, "time": fmt_time(row["requested_at"]),
                "site_name": site["name"] if site else row["site_id"],
                "category_label": category_label(item["category"]) if item else "",
                "requester_name": requester["display_name"] if requester else
                row["requested_by"],
                "mine": row["requested_by"] == user.username,
                "can_decide": state == "pending" and row["requested_by"] != user.username,
                "approved_time": fmt_time(row["approved_at"]),
                "declined_time": fmt_time(row["declined_at"]),
                "until": fmt_time(row["expires_at"]),
                "lapses": fmt_time(row["requested_at"] + UNLOCK_REQUEST_MS)}

    def approve_unlock(self, user: User, unlock_id: int) -> int:
        """A second, different senior person confirms (four-eyes, step 2): a DSL or deputy
        DSL of the site, or a named second approver. Returns the item id; the requester is
        told (notification list; email when SMTP is set up)."""
        now = self._now()
        row = self._decidable(user, unlock_id)
        if row["requested_by"] == user.username:
            raise Refused(403, "four-eyes: a different senior user must approve", row["site_id"])
        if row["approved_by"] is not None or row["declined_at"] is not None or \
                row["requested_at"] <= now - UNLOCK_REQUEST_MS:
            raise BadInput("this request is already decided or has lapsed")
        with self.store.atomic():
            if not self.store.approve_unlock_row(unlock_id, user.username, now,
                                                 now + UNLOCK_MS):
                raise BadInput("this request is already decided or has lapsed")
            self.audit.record(user.username, "unlock.approve",
                              f"queue_item:{row['queue_item_id']}", row["site_id"], now_ms=now,
                              unlock_id=unlock_id, requested_by=row["requested_by"],
                              expires_at=now + UNLOCK_MS)
        self._email_requester(row, "approved")
        return int(row["queue_item_id"])

    def decline_unlock(self, user: User, unlock_id: int, reason: str) -> int:
        """The second person says no, with a reason the requester reads. Returns the item
        id. Audited; the requester is told."""
        now = self._now()
        row = self._decidable(user, unlock_id)
        if row["requested_by"] == user.username:
            raise Refused(403, "four-eyes: the requester cannot decide", row["site_id"])
        reason = reason.strip()
        if not reason:
            raise BadInput("reason: say why you decline, so your colleague knows what to do")
        if len(reason) > 500:
            raise BadInput("reason: at most 500 characters")
        with self.store.atomic():
            if row["requested_at"] <= now - UNLOCK_REQUEST_MS or \
                    not self.store.decline_unlock_row(unlock_id, user.username, now, reason):
                raise BadInput("this request is already decided or has lapsed")
            self.audit.record(user.username, "unlock.decline",
                              f"queue_item:{row['queue_item_id']}", row["site_id"], now_ms=now,
                              unlock_id=unlock_id, requested_by=row["requested_by"],
                              reason_chars=len(reason))
        self._email_requester(row, "declined")
        return int(row["queue_item_id"])

    def _four_eyes_view(self, view: ItemView, qid: int, now: int) -> None:
        """The item's four-eyes history (request, approval, decline, expiry, lapse) and any
        recorded police referral, oldest first; and when the user's unlock ends."""
        events: list[dict[str, Any]] = []

        def add(at: int, actor: str, kind: str, label: str, note: str = "") -> None:
            events.append({"at": at, "time": fmt_time(at), "actor": actor, "kind": kind,
                           "actor_name": actor, "label": label, "note": note, "reason": ""})

        for u in self.store.item_unlocks(qid):
            add(u["requested_at"], u["requested_by"], "unlock_request",
                "Four-eyes: asked to open the metadata", u["reason"])
            if u["approved_at"] is not None:
                add(u["approved_at"], u["approved_by"], "unlock_approve",
                    f"Four-eyes: approved (access until {fmt_time(u['expires_at'])})")
                if u["expires_at"] is not None and u["expires_at"] <= now:
                    add(u["expires_at"], "Vigil", "unlock_expired",
                        f"Four-eyes: access for {u['requested_by']} ended (unlock expired)")
            elif u["declined_at"] is not None:
                add(u["declined_at"], u["declined_by"], "unlock_decline",
                    "Four-eyes: declined", u["decline_reason"])
            elif u["requested_at"] + UNLOCK_REQUEST_MS <= now:
                add(u["requested_at"] + UNLOCK_REQUEST_MS, "Vigil", "unlock_lapsed",
                    "Four-eyes: request lapsed unanswered")
        if not view.unlocked:  # locked: of the recorded actions, only the referral shows
            for a in self.store.item_actions(qid):
                if a["action"] == POLICE_ACTION:
                    add(a["at"], a["actor"], "action", action_label(a["action"]), a["note"])
        view.four_eyes = sorted(events, key=lambda e: e["at"])
        if view.unlocked and view.my_unlock and view.my_unlock.get("expires_at"):
            view.unlock_until = fmt_time(view.my_unlock["expires_at"])

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
