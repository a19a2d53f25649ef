"""What the console's notification list, its no-contacts banner, four-eyes approvers and the
scheduled weekly summary read and write. Every query is scoped to the sites the caller passes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from collector.domain.vocabulary import OPEN_STATUSES
from collector.store.sql import Db, in_list

__all__ = ["NoticesRepo"]


def _has_site_clause(site_id: str) -> tuple[str, list[Any]]:
    """``users.sites`` (a JSON list) holds ``site_id`` or '*'."""
    return "(sites LIKE ? OR sites LIKE ?)", [f'%"{site_id}"%', '%"*"%']


class NoticesRepo:
    db: Db

    # -- the notification list --------------------------------------------------------------
    def urgent_new_items(self, sites: Sequence[str], min_severity: int,
                         limit: int) -> list[dict[str, Any]]:
        """Items of these sites still ``new`` with at least ``min_severity``, most urgent
        first (no content: category, severity, site, times)."""
        where, args = in_list("site_id", list(sites))
        return self.db.rows(
            "SELECT id, site_id, category, severity, priority, refer_police, created_at, "
            f"last_time_ms FROM queue_items WHERE {where} AND status = 'new' "
            "AND severity >= ? ORDER BY pinned DESC, priority DESC, last_time_ms DESC LIMIT ?",
            [*args, min_severity, limit])

    def assigned_open_items(self, username: str, sites: Sequence[str],
                            limit: int) -> list[dict[str, Any]]:
        """Open items of these sites assigned to ``username``, newest change first."""
        where, args = in_list("site_id", list(sites))
        open_, open_args = in_list("status", sorted(OPEN_STATUSES))
        return self.db.rows(
            "SELECT id, site_id, category, severity, status, updated_at FROM queue_items "
            f"WHERE assignee = ? AND {open_} AND {where} ORDER BY updated_at DESC LIMIT ?",
            [username, *open_args, *args, limit])

    def decided_unlocks_of(self, username: str, since_ms: int) -> list[dict[str, Any]]:
        """The user's four-eyes requests approved or declined since ``since_ms``."""
        return self.db.rows(
            "SELECT * FROM console_unlocks WHERE requested_by = ? AND "
            "(approved_at > ? OR declined_at > ?) ORDER BY id DESC",
            (username, since_ms, since_ms))

    def notice_seen(self, username: str) -> int:
        """When ``username`` last opened the notification list (0: never)."""
        value = self.db.scalar("SELECT seen_at FROM console_notice_seen WHERE username = ?",
                               (username,))
        return int(value) if value is not None else 0

    def set_notice_seen(self, username: str, now_ms: int) -> None:
        self.db.execute(
            "INSERT INTO console_notice_seen (username, seen_at) VALUES (?, ?) "
            "ON CONFLICT (username) DO UPDATE SET seen_at = excluded.seen_at",
            (username, now_ms))

    def sites_without_contacts(self, sites: Sequence[str]) -> list[dict[str, Any]]:
        """(id, name) of these sites whose DSL contact list is empty: urgent email is off."""
        where, args = in_list("id", list(sites))
        rows = self.db.rows(f"SELECT id, name, dsl_contacts FROM sites WHERE {where} "
                            "ORDER BY id", args)
        out = []
        for r in rows:
            try:
                contacts = json.loads(r["dsl_contacts"] or "[]")
            except ValueError:
                contacts = []
            if not (isinstance(contacts, list) and any(str(c).strip() for c in contacts)):
                out.append({"id": r["id"], "name": r["name"]})
        return out

    # -- four-eyes approvers ------------------------------------------------------------------
    def approvers_of(self, site_id: str, content_roles: Sequence[str],
                     flag_roles: Sequence[str]) -> list[dict[str, Any]]:
        """Enabled accounts who may approve a four-eyes request of ``site_id``: its DSLs and
        deputy DSLs, and the accounts named second approvers (``flag_roles``) that reach it."""
        has, has_args = _has_site_clause(site_id)
        content, c_args = in_list("role", list(content_roles))
        flagged, f_args = in_list("role", list(flag_roles))
        return self.db.rows(
            "SELECT username, display_name, email, role FROM users WHERE disabled_at IS NULL "
            f"AND {has} AND ({content} OR (second_approver = 1 AND {flagged})) "
            "ORDER BY username", [*has_args, *c_args, *f_args])

    def account_brief(self, username: str) -> dict[str, Any] | None:
        """An enabled account's name and email (for telling a requester), or None."""
        return self.db.one("SELECT username, display_name, email FROM users WHERE "
                           "username = ? AND disabled_at IS NULL", (username,))

    def set_second_approver_flag(self, username: str, on: bool) -> int:
        return self.db.execute("UPDATE users SET second_approver = ? WHERE username = ? "
                               "AND disabled_at IS NULL", (int(on), username))

    # -- the scheduled weekly summary -----------------------------------------------------------
    def sites_with_contacts(self) -> list[str]:
        """Every site id with at least one DSL contact, sorted."""
        rows = self.db.rows("SELECT id, dsl_contacts FROM sites ORDER BY id")
        out = []
        for r in rows:
            try:
                contacts = json.loads(r["dsl_contacts"] or "[]")
            except ValueError:
                continue
            if isinstance(contacts, list) and contacts:
                out.append(str(r["id"]))
        return out

    def claim_weekly(self, site_id: str, week: str, now_ms: int, by: str) -> bool:
        """Claim this site's summary for ``week``; False when it is claimed already (by
        this or another collector), so each site gets one summary a week."""
        got = self.db.one(
            "INSERT INTO weekly_sends (site_id, week, claimed_at, claimed_by) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (site_id, week) DO NOTHING RETURNING site_id",
            (site_id, week, now_ms, by))
        return got is not None

    def weekly_sent(self, site_id: str, week: str, now_ms: int, recipients: int) -> None:
        self.db.execute("UPDATE weekly_sends SET sent_at = ?, recipients = ? "
                        "WHERE site_id = ? AND week = ?", (now_ms, recipients, site_id, week))

    def release_weekly(self, site_id: str, week: str) -> None:
        """Give a claim back after a failed send, so the next check tries again."""
        self.db.execute("DELETE FROM weekly_sends WHERE site_id = ? AND week = ? "
                        "AND sent_at IS NULL", (site_id, week))

    def weekly_sends(self, site_id: str) -> list[dict[str, Any]]:
        return self.db.rows("SELECT * FROM weekly_sends WHERE site_id = ? ORDER BY week",
                            (site_id,))
