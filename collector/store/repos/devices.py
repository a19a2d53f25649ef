"""Sites, groups, enrolment tokens and devices: the estate an agent enrols into."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from collector.store.base import DeviceExists, DeviceRow, SiteRow, TokenError, TokenInfo
from collector.store.sql import Db

__all__ = ["DevicesRepo", "hash_token"]


def hash_token(secret: str) -> str:
    """Tokens are stored as sha256 of the secret; the secret itself never is."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


_DEVICE_SQL = (
    "SELECT d.*, COALESCE(g.age_band, d.group_name) AS age_band FROM devices d "
    "LEFT JOIN groups g ON g.site_id = d.site_id AND g.name = d.group_name"
)


def _token(r: dict[str, Any]) -> TokenInfo:
    return TokenInfo(r["id"], r["site_id"], r["group_name"], r["max_uses"], r["uses"],
                     r["expires_at"], r["revoked_at"], r["created_by"], r["created_at"])


def _device(r: dict[str, Any]) -> DeviceRow:
    return DeviceRow(
        r["id"], r["site_id"], r["group_name"], r["age_band"], r["hostname"], r["os"],
        r["agent_version"], r["rules_version"], r["spool_depth"], r["spool_bytes"],
        json.loads(r["drops"] or "{}"), r["last_user"], r["cert_serial"], r["enrolled_at"],
        r["last_seen_at"], r["revoked_at"])


class DevicesRepo:
    db: Db

    if TYPE_CHECKING:  # provided by AuditRepo in the store class
        def audit(self, actor: str, action: str, target: str = "", site_id: str | None = None,
                  detail: dict[str, Any] | None = None, now_ms: int | None = None) -> None: ...

    # -- sites and groups --------------------------------------------------------------------
    def ensure_site(self, site_id: str, name: str, now_ms: int) -> bool:
        """Create the site unless it exists; True when it was created."""
        return self.db.execute(
            "INSERT INTO sites (id, name, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING", (site_id, name, now_ms)) > 0

    def get_site(self, site_id: str) -> SiteRow | None:
        r = self.db.one("SELECT * FROM sites WHERE id = ?", (site_id,))
        if r is None:
            return None
        return SiteRow(r["id"], r["name"], json.loads(r["dsl_contacts"]), r["webhook_url"],
                       wales=bool(r.get("wales")))

    def set_site_wales(self, site_id: str, wales: bool) -> int:
        """Mark a site Welsh (its lead is the DSP) or not; returns the rows changed."""
        return self.db.execute("UPDATE sites SET wales = ? WHERE id = ?",
                               (int(wales), site_id))

    def set_site_contacts(self, site_id: str, contacts: Sequence[str],
                          webhook_url: str | None) -> None:
        """The site's alert contacts, in escalation order, and its optional webhook."""
        self.db.execute("UPDATE sites SET dsl_contacts = ?, webhook_url = ? WHERE id = ?",
                        (json.dumps(list(contacts)), webhook_url, site_id))

    def ensure_group(self, site_id: str, name: str, age_band: str) -> str:
        """Create the group unless it exists; returns its (possibly older) age band."""
        with self.db.transaction():
            self.db.execute("INSERT INTO groups (site_id, name, age_band) VALUES (?, ?, ?) "
                            "ON CONFLICT (site_id, name) DO NOTHING", (site_id, name, age_band))
            return str(self.db.scalar(
                "SELECT age_band FROM groups WHERE site_id = ? AND name = ?", (site_id, name)))

    # -- enrolment tokens --------------------------------------------------------------------
    def create_token(self, site_id: str, group_name: str, max_uses: int, expires_at: int,
                     created_by: str, now_ms: int) -> tuple[TokenInfo, str]:
        """A new token and its secret (shown once; only its hash is stored)."""
        secret = "vgl_" + secrets.token_urlsafe(24)
        tid = "t-" + secrets.token_hex(4)
        self.db.execute(
            "INSERT INTO enrol_tokens (id, token_hash, site_id, group_name, max_uses, "
            "expires_at, created_by, created_at) VALUES (?,?,?,?,?,?,?,?)",
            (tid, hash_token(secret), site_id, group_name, max_uses, expires_at, created_by,
             now_ms))
        return TokenInfo(tid, site_id, group_name, max_uses, 0, expires_at, None, created_by,
                         now_ms), secret

    def revoke_token(self, token_id: str, now_ms: int) -> bool:
        """True when a live token was revoked now."""
        return self.db.execute(
            "UPDATE enrol_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (now_ms, token_id)) > 0

    def list_tokens(self) -> list[TokenInfo]:
        return [_token(r) for r in self.db.rows(
            "SELECT * FROM enrol_tokens ORDER BY created_at, id")]

    def check_token(self, token_secret: str, now_ms: int) -> TokenInfo:
        """The token for this secret, or TokenError(unknown|revoked|expired|used_up)."""
        r = self.db.one("SELECT * FROM enrol_tokens WHERE token_hash = ?",
                        (hash_token(token_secret),))
        if r is None:
            raise TokenError("unknown")
        tok = _token(r)
        if tok.revoked_at is not None:
            raise TokenError("revoked")
        if tok.expires_at <= now_ms:
            raise TokenError("expired")
        if tok.uses >= tok.max_uses:
            raise TokenError("used_up")
        return tok

    def enrol_device(self, token_secret: str, device_id: str, hostname: str, os: str,
                     agent_version: str, cert_serial: str, now_ms: int) -> DeviceRow:
        """Spend one use of the token on a new device (never replaces an enrolled one)."""
        with self.db.transaction():
            tok = self.check_token(token_secret, now_ms)
            if self.device_exists(device_id):
                raise DeviceExists(f"device {device_id} is already enrolled")
            if self.db.execute("UPDATE enrol_tokens SET uses = uses + 1 "
                               "WHERE id = ? AND uses < max_uses", (tok.id,)) != 1:
                raise TokenError("used_up")
            self.db.execute(
                "INSERT INTO devices (id, site_id, group_name, hostname, os, agent_version, "
                "cert_serial, enrolled_at, enrol_token_id) VALUES (?,?,?,?,?,?,?,?,?)",
                (device_id, tok.site_id, tok.group_name, hostname, os, agent_version,
                 cert_serial, now_ms, tok.id))
            self.audit("system", "device.enrol", device_id, tok.site_id,
                       {"token": tok.id, "hostname": hostname, "group": tok.group_name}, now_ms)
        dev = self.get_device(device_id)
        assert dev is not None
        return dev

    # -- devices -----------------------------------------------------------------------------
    def device_exists(self, device_id: str) -> bool:
        return self.db.one("SELECT 1 AS x FROM devices WHERE id = ?", (device_id,)) is not None

    def get_device(self, device_id: str) -> DeviceRow | None:
        r = self.db.one(_DEVICE_SQL + " WHERE d.id = ?", (device_id,))
        return _device(r) if r else None

    def list_devices(self, silent_since_ms: int | None = None) -> list[DeviceRow]:
        """Every device by site and hostname; or the live ones silent since a time."""
        if silent_since_ms is None:
            rows = self.db.rows(_DEVICE_SQL + " ORDER BY d.site_id, d.hostname")
        else:
            rows = self.db.rows(
                _DEVICE_SQL + " WHERE COALESCE(d.last_seen_at, d.enrolled_at) < ? "
                "AND d.revoked_at IS NULL ORDER BY d.last_seen_at NULLS FIRST", (silent_since_ms,))
        return [_device(r) for r in rows]

    def revoke_device(self, device_id: str, now_ms: int) -> bool:
        """True when a live device was revoked now (serve then closes its stream)."""
        return self.db.execute("UPDATE devices SET revoked_at = ? WHERE id = ? "
                               "AND revoked_at IS NULL", (now_ms, device_id)) > 0

    def revoked_since(self, since_ms: int) -> list[str]:
        """Devices revoked at or after ``since_ms`` (serve closes their live streams)."""
        return [r["id"] for r in self.db.rows(
            "SELECT id FROM devices WHERE revoked_at IS NOT NULL AND revoked_at >= ?",
            (since_ms,))]

    def pupil_age_band(self, site_id: str, username: str) -> str | None:
        """The roster's age band for this login at this site (None when not on the roster)."""
        v = self.db.scalar("SELECT age_band FROM pupils WHERE site_id = ? AND username = ?",
                           (site_id, username))
        return None if v is None else str(v)
