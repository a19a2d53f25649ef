"""The school's people and machines as the console knows them: the pupil roster (from the
MIS), and the technicians' device list, enrolment tokens (never their secrets) and rooms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from collector.store.sql import Db, in_list

__all__ = ["RosterRepo"]


class RosterRepo:
    db: Db

    def site_known(self, site_id: str) -> bool:
        """Whether the site exists."""
        return self.db.one("SELECT 1 AS x FROM sites WHERE id = ?", (site_id,)) is not None

    def upsert_pupils(self, site_id: str, rows: Sequence[tuple[str, str, str, str]]) -> None:
        """Insert or update (username, display name, year group, age band) rows of one site,
        in one transaction."""
        with self.db.transaction():
            self.db.executemany(
                "INSERT INTO pupils (site_id, username, display_name, year_group, age_band) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (site_id, username) DO UPDATE SET "
                "display_name = excluded.display_name, year_group = excluded.year_group, "
                "age_band = excluded.age_band", [(site_id, *r) for r in rows])

    def site_devices(self, sites: list[str], limit: int = 5000) -> list[dict[str, Any]]:
        """Device health rows of these sites, by site, room and hostname."""
        where, args = in_list("site_id", sites)
        return self.db.rows(
            "SELECT id, site_id, group_name, hostname, os, agent_version, rules_version, room, "
            f"last_seen_at, spool_depth, drops, sources, revoked_at FROM devices WHERE {where} "
            "ORDER BY site_id, room NULLS FIRST, hostname LIMIT ?", [*args, limit])

    def site_tokens(self, sites: list[str], limit: int = 200) -> list[dict[str, Any]]:
        """Enrolment tokens of these sites, newest first (never the secret or its hash)."""
        where, args = in_list("site_id", sites)
        return self.db.rows(
            "SELECT id, site_id, group_name, max_uses, uses, expires_at, revoked_at, created_by "
            f"FROM enrol_tokens WHERE {where} ORDER BY created_at DESC LIMIT ?", [*args, limit])

    def token_site(self, token_id: str) -> str | None:
        """The site of an enrolment token, or None when there is no such token."""
        v = self.db.scalar("SELECT site_id FROM enrol_tokens WHERE id = ?", (token_id,))
        return str(v) if v is not None else None

    def device_site(self, device_id: str) -> dict[str, Any] | None:
        """A device's site id and hostname, or None."""
        return self.db.one("SELECT site_id, hostname FROM devices WHERE id = ?", (device_id,))

    def set_device_room(self, device_id: str, room: str | None) -> int:
        """Put a device in a room (None clears it); returns 1, or 0 if there is no device."""
        return self.db.execute("UPDATE devices SET room = ? WHERE id = ?", (room, device_id))
