"""Console accounts: users, server-side sessions, known devices and log-in attempts.

Only hashes are stored: the argon2 password hash, and sha256 of the session and device cookies.
"""

from __future__ import annotations

import json
from typing import Any

from collector.store.sql import Db

__all__ = ["AccountsRepo"]


class AccountsRepo:
    db: Db

    # -- users ----------------------------------------------------------------------------
    def account_row(self, username: str) -> dict[str, Any] | None:
        """The enabled account ``username`` (with its password hash), or None."""
        return self.db.one("SELECT * FROM users WHERE username = ? AND disabled_at IS NULL",
                           (username,))

    def account_taken(self, username: str) -> bool:
        """Whether any account, enabled or not, has this username."""
        return self.db.one("SELECT 1 AS x FROM users WHERE username = ?", (username,)) is not None

    def account_list(self) -> list[dict[str, Any]]:
        """Every account without its password hash, by username."""
        return self.db.rows("SELECT username, display_name, email, role, sites, created_at, "
                            "disabled_at FROM users ORDER BY username")

    def add_account(self, *, username: str, display_name: str, email: str, password_hash: str,
                    role: str, sites: list[str], now_ms: int) -> None:
        """Insert one account (the caller has validated every field)."""
        self.db.execute(
            "INSERT INTO users (username, display_name, email, password_hash, role, sites, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (username, display_name, email, password_hash, role, json.dumps(sites), now_ms))

    def set_password_hash(self, username: str, password_hash: str) -> int:
        """Replace an enabled account's password hash; returns 1, or 0 when there is none."""
        return self.db.execute(
            "UPDATE users SET password_hash = ? WHERE username = ? AND disabled_at IS NULL",
            (password_hash, username))

    def set_language(self, username: str, language: str) -> int:
        """Set an enabled account's console language; returns 1, or 0 when there is none."""
        return self.db.execute(
            "UPDATE users SET language = ? WHERE username = ? AND disabled_at IS NULL",
            (language, username))

    def wales_site_ids(self) -> list[str]:
        """The ids of the Welsh sites (their lead is the DSP), sorted."""
        return [str(r["id"]) for r in
                self.db.rows("SELECT id FROM sites WHERE wales = 1 ORDER BY id")]

    def site_ids(self) -> list[str]:
        """Every site id, sorted."""
        return [str(r["id"]) for r in self.db.rows("SELECT id FROM sites ORDER BY id")]

    # -- sessions -------------------------------------------------------------------------
    def add_session(self, *, token_hash: str, username: str, csrf: str, ip: str, now_ms: int,
                    expires_at: int) -> None:
        """Store a new session under the hash of its cookie."""
        self.db.execute(
            "INSERT INTO console_sessions (token_hash, username, csrf, ip, created_at, "
            "last_seen_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (token_hash, username, csrf, ip, now_ms, now_ms, expires_at))

    def session_row(self, token_hash: str) -> dict[str, Any] | None:
        """The session stored under this cookie hash, or None."""
        return self.db.one("SELECT * FROM console_sessions WHERE token_hash = ?", (token_hash,))

    def touch_session(self, token_hash: str, now_ms: int) -> None:
        """Slide a session's idle timer."""
        self.db.execute("UPDATE console_sessions SET last_seen_at = ? WHERE token_hash = ?",
                        (now_ms, token_hash))

    def delete_session(self, token_hash: str) -> None:
        """End one session."""
        self.db.execute("DELETE FROM console_sessions WHERE token_hash = ?", (token_hash,))

    def delete_sessions_of(self, username: str) -> int:
        """End every session of one account; returns how many ended."""
        return self.db.execute("DELETE FROM console_sessions WHERE username = ?", (username,))

    def prune_sessions(self, now_ms: int, idle_before_ms: int) -> None:
        """Forget sessions past their absolute expiry or idle since ``idle_before_ms``."""
        self.db.execute("DELETE FROM console_sessions WHERE expires_at <= ? OR last_seen_at < ?",
                        (now_ms, idle_before_ms))

    # -- known devices (browsers that have logged in to an account before) -----------------
    def add_known_device(self, token_hash: str, username: str, now_ms: int) -> None:
        """Remember a browser's device cookie (its hash) for an account."""
        self.db.execute(
            "INSERT INTO console_known_devices (token_hash, username, created_at, last_used_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (token_hash) DO UPDATE SET "
            "last_used_at = excluded.last_used_at", (token_hash, username, now_ms, now_ms))

    def known_device(self, token_hash: str, username: str, since_ms: int) -> bool:
        """Whether this device cookie logged in to ``username`` since ``since_ms``."""
        return self.db.one(
            "SELECT 1 AS x FROM console_known_devices WHERE token_hash = ? AND username = ? "
            "AND last_used_at >= ?", (token_hash, username, since_ms)) is not None

    def prune_known_devices(self, before_ms: int) -> None:
        """Forget device cookies unused since ``before_ms``."""
        self.db.execute("DELETE FROM console_known_devices WHERE last_used_at < ?", (before_ms,))

    # -- log-in attempts ------------------------------------------------------------------
    def record_login_attempt(self, *, at: int, username: str, ip: str, throttle_key: str,
                             ok: bool) -> None:
        """Append one log-in attempt (``throttle_key`` says whose budget it spends)."""
        self.db.execute(
            "INSERT INTO console_login_attempts (at, username, ip, throttle_key, ok) "
            "VALUES (?, ?, ?, ?, ?)", (at, username, ip, throttle_key, int(ok)))

    def login_failures(self, username: str, throttle_key: str,
                       since_ms: int) -> tuple[int, int | None]:
        """Failed attempts for (account, key) since ``since_ms`` and since the last success
        under the same key: (how many, time of the latest)."""
        row = self.db.one(
            "SELECT COUNT(*) AS n, MAX(at) AS latest FROM console_login_attempts "
            "WHERE username = ? AND throttle_key = ? AND ok = 0 AND at > ? AND id > COALESCE("
            "(SELECT MAX(id) FROM console_login_attempts WHERE username = ? "
            "AND throttle_key = ? AND ok = 1), 0)",
            (username, throttle_key, since_ms, username, throttle_key))
        if row is None:
            return 0, None
        latest = row["latest"]
        return int(row["n"]), (int(latest) if latest is not None else None)

    def prune_login_attempts(self, before_ms: int) -> None:
        """Forget attempts older than ``before_ms``."""
        self.db.execute("DELETE FROM console_login_attempts WHERE at < ?", (before_ms,))
