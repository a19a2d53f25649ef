"""The console's own tables, in their own sqlite-utils migration set ("vigil-console").

Sessions, login attempts and four-eyes unlock requests live here so the collector's core
schema (collector/store/schema.py) stays the shared contract. Times are integer ms (UTC).
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

__all__ = ["MIGRATIONS", "SCHEMA_SET", "migrate"]

SCHEMA_SET = "vigil-console"
MIGRATIONS = Migrations(SCHEMA_SET)


@MIGRATIONS(name="0001_console")
def _console(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE console_sessions (
            token_hash TEXT PRIMARY KEY,          -- sha256 of the cookie value; the cookie is never stored
            username TEXT NOT NULL,
            csrf TEXT NOT NULL,                   -- per-session CSRF token
            ip TEXT NOT NULL DEFAULT '',
            created_at INTEGER NOT NULL,
            last_seen_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL           -- absolute expiry; idle expiry uses last_seen_at
        );
        CREATE INDEX console_sessions_user ON console_sessions(username);
        CREATE TABLE console_login_attempts (
            id INTEGER PRIMARY KEY,
            at INTEGER NOT NULL,
            username TEXT NOT NULL,
            ip TEXT NOT NULL,
            ok INTEGER NOT NULL
        );
        CREATE INDEX console_login_user ON console_login_attempts(username, at);
        CREATE INDEX console_login_ip ON console_login_attempts(ip, at);
        CREATE TABLE console_unlocks (            -- four-eyes access to illegal-imagery metadata
            id INTEGER PRIMARY KEY,
            queue_item_id INTEGER NOT NULL,
            site_id TEXT NOT NULL,
            requested_by TEXT NOT NULL,
            requested_at INTEGER NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            approved_by TEXT,                     -- a different DSL / deputy DSL of the site
            approved_at INTEGER,
            expires_at INTEGER                    -- access window after approval
        );
        CREATE INDEX console_unlocks_item ON console_unlocks(queue_item_id, requested_by);
        -- The queue's default view filters by status within a site; this keeps the first page
        -- an index walk with 1M captures stored (see bench/console.py).
        CREATE INDEX console_queue_user ON queue_items(site_id, os_user, last_time_ms);
        CREATE INDEX console_queue_category ON queue_items(site_id, category, status);
        CREATE INDEX console_queue_status_order
            ON queue_items(site_id, status, pinned DESC, priority DESC, last_time_ms DESC);
        """
    )


def migrate(db: Database) -> None:
    """Apply every pending console migration (after the core schema). Safe at every start."""
    MIGRATIONS.apply(db)
