"""Casework on one queue item: its detail, actions and notes, assignment, four-eyes unlocks,
and the per-rule precision the technicians tune rules with (counts, never content)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from collector.domain.vocabulary import CLOSED_STATUSES
from collector.store.sql import Db, in_list

__all__ = ["CaseworkRepo"]

_BRIEF_COLS = ("id, time_ms, last_time_ms, count, source, rule_id, severity, hostname, os_user, "
               "rules_version, match_kind")
_CONTENT_COLS = (", match, context, window_title, process, reasons, score, media, "
                 "CASE WHEN screenshot_path IS NOT NULL THEN 1 ELSE 0 END AS has_shot")
#: The queue_items columns an action may change.
_ITEM_SETTABLE = frozenset({"status", "closed_at", "assignee", "updated_at"})


class CaseworkRepo:
    db: Db

    if TYPE_CHECKING:  # provided by CapturesRepo (or the backend) in the store class
        def queue_changed(self, item_ids: Sequence[int]) -> None: ...

    def queue_item(self, qid: int) -> dict[str, Any] | None:
        """One queue item row, or None."""
        return self.db.one("SELECT * FROM queue_items WHERE id = ?", (qid,))

    def pupil_brief(self, site_id: str, username: str) -> dict[str, Any] | None:
        """A pupil's display name and year group from the roster, or None."""
        return self.db.one("SELECT display_name, year_group FROM pupils WHERE site_id = ? "
                           "AND username = ?", (site_id, username))

    def device_brief(self, device_id: str) -> dict[str, Any] | None:
        """A device's hostname and room, or None."""
        return self.db.one("SELECT hostname, room FROM devices WHERE id = ?", (device_id,))

    def item_captures(self, qid: int, *, content: bool, limit: int = 50) -> list[dict[str, Any]]:
        """The item's newest captures; ``content=False`` leaves out everything a pupil wrote
        or saw (illegal imagery: metadata only)."""
        cols = _BRIEF_COLS + (_CONTENT_COLS if content else "")
        return self.db.rows(f"SELECT {cols} FROM captures WHERE queue_item_id = ? "
                            "ORDER BY time_ms DESC LIMIT ?", (qid, limit))

    def item_actions(self, qid: int) -> list[dict[str, Any]]:
        """The item's recorded actions, notes and status changes, oldest first."""
        return self.db.rows("SELECT actor, action, note, reason, at FROM queue_actions "
                            "WHERE queue_item_id = ? ORDER BY at, id", (qid,))

    def staff_names(self, usernames: Iterable[str]) -> dict[str, str]:
        """Console users' display names, by username (unknown usernames are left out)."""
        names = sorted(set(usernames))
        if not names:
            return {}
        where, args = in_list("username", names)
        return {str(r["username"]): str(r["display_name"]) for r in self.db.rows(
            f"SELECT username, display_name FROM users WHERE {where}", args)}

    def site_assignees(self, site_id: str) -> list[str]:
        """Usernames of the enabled DSLs and deputy DSLs of one site."""
        return [str(r["username"]) for r in self.db.rows(
            "SELECT username FROM users WHERE disabled_at IS NULL "
            "AND role IN ('dsl', 'deputy_dsl') AND sites LIKE ? ORDER BY username",
            (f'%"{site_id}"%',))]

    def record_action(self, qid: int, *, actor: str, action: str, note: str, now_ms: int,
                      item_changes: Mapping[str, Any], reason: str = "") -> None:
        """Append one queue action (with the reason given for it) and apply its changes to
        the item (join the caller's transaction to make both one unit with the audit row);
        other collectors hear of the change (``queue_changed``) when it commits."""
        bad = set(item_changes) - _ITEM_SETTABLE
        if bad:
            raise ValueError(f"queue item columns {sorted(bad)} cannot be set by an action")
        with self.db.transaction():
            self.db.execute("INSERT INTO queue_actions (queue_item_id, actor, action, note, "
                            "reason, at) VALUES (?, ?, ?, ?, ?, ?)",
                            (qid, actor, action, note, reason, now_ms))
            if item_changes:
                sets = ", ".join(f"{k} = ?" for k in item_changes)
                self.db.execute(f"UPDATE queue_items SET {sets} WHERE id = ?",
                                [*item_changes.values(), qid])
            self.queue_changed([qid])

    def capture_screenshot(self, qid: int, capture_id: str) -> str | None:
        """The stored (encrypted) screenshot path of one capture of this item, or None."""
        value = self.db.scalar("SELECT screenshot_path FROM captures WHERE id = ? "
                               "AND queue_item_id = ?", (capture_id, qid))
        return str(value) if value else None

    # -- four-eyes unlocks ----------------------------------------------------------------
    def unlock_active(self, qid: int, username: str, now_ms: int) -> bool:
        """Whether ``username`` holds an approved, unexpired unlock for this item."""
        return self.db.one(
            "SELECT 1 AS x FROM console_unlocks WHERE queue_item_id = ? AND requested_by = ? "
            "AND approved_by IS NOT NULL AND expires_at > ?", (qid, username, now_ms)) is not None

    def latest_unlock(self, qid: int, username: str, now_ms: int,
                      requested_since_ms: int) -> dict[str, Any] | None:
        """The user's newest unlock for this item that is pending (requested since
        ``requested_since_ms``, not declined) or approved and unexpired, or None."""
        return self.db.one(
            "SELECT * FROM console_unlocks WHERE queue_item_id = ? AND requested_by = ? "
            "AND ((approved_by IS NULL AND declined_at IS NULL AND requested_at > ?) "
            "OR expires_at > ?) "
            "ORDER BY id DESC LIMIT 1", (qid, username, requested_since_ms, now_ms))

    def add_unlock(self, *, qid: int, site_id: str, requested_by: str, now_ms: int,
                   reason: str) -> int:
        """Store a four-eyes unlock request; returns its id."""
        return int(self.db.scalar(
            "INSERT INTO console_unlocks (queue_item_id, site_id, requested_by, requested_at, "
            "reason) VALUES (?, ?, ?, ?, ?) RETURNING id",
            (qid, site_id, requested_by, now_ms, reason)))

    def unlock_row(self, unlock_id: int) -> dict[str, Any] | None:
        """One unlock request, or None."""
        return self.db.one("SELECT * FROM console_unlocks WHERE id = ?", (unlock_id,))

    def pending_unlocks(self, sites: list[str], not_requested_by: str,
                        requested_since_ms: int) -> list[dict[str, Any]]:
        """Undecided requests of these sites made by someone else since the given time,
        with the item's category."""
        where, args = in_list("u.site_id", sites)
        return self.db.rows(
            "SELECT u.*, q.category FROM console_unlocks u JOIN queue_items q "
            f"ON q.id = u.queue_item_id WHERE {where} AND u.approved_by IS NULL "
            "AND u.declined_at IS NULL "
            "AND u.requested_by <> ? AND u.requested_at > ? ORDER BY u.id",
            [*args, not_requested_by, requested_since_ms])

    def approve_unlock_row(self, unlock_id: int, approved_by: str, now_ms: int,
                           expires_at: int) -> bool:
        """Approve a still-pending request; False when it was decided meanwhile."""
        return self.db.execute(
            "UPDATE console_unlocks SET approved_by = ?, approved_at = ?, expires_at = ? "
            "WHERE id = ? AND approved_by IS NULL AND declined_at IS NULL",
            (approved_by, now_ms, expires_at, unlock_id)) == 1

    def decline_unlock_row(self, unlock_id: int, declined_by: str, now_ms: int,
                           reason: str) -> bool:
        """Decline a still-pending request; False when it was decided meanwhile."""
        return self.db.execute(
            "UPDATE console_unlocks SET declined_by = ?, declined_at = ?, decline_reason = ? "
            "WHERE id = ? AND approved_by IS NULL AND declined_at IS NULL",
            (declined_by, now_ms, reason, unlock_id)) == 1

    def item_unlocks(self, qid: int) -> list[dict[str, Any]]:
        """Every four-eyes request of one item, oldest first (the item's four-eyes history)."""
        return self.db.rows("SELECT * FROM console_unlocks WHERE queue_item_id = ? "
                            "ORDER BY requested_at, id", (qid,))

    # -- precision (technicians) ----------------------------------------------------------
    def rule_precision_rows(self, sites: list[str]) -> list[dict[str, Any]]:
        """Per (rule, category) of these sites: items, reviewed (closed statuses) and false
        positives; most false positives first."""
        where, args = in_list("site_id", sites)
        closed, closed_args = in_list("status", sorted(CLOSED_STATUSES))
        return self.db.rows(
            f"SELECT rule_id, category, COUNT(*) AS total, "
            f"COUNT(CASE WHEN {closed} THEN 1 END) AS reviewed, "
            f"COUNT(CASE WHEN status = 'false_positive' THEN 1 END) AS false_positives "
            f"FROM queue_items WHERE {where} GROUP BY rule_id, category "
            f"ORDER BY false_positives DESC, total DESC, rule_id", [*closed_args, *args])

    def rule_version_history(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest published rule versions (no bundle content)."""
        return self.db.rows("SELECT version, content_hash, created_at, published_by, active, "
                            "note FROM rule_versions ORDER BY version DESC LIMIT ?", (limit,))
