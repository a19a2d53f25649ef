"""The console's own tables, in their own sqlite-utils migration set ("vigil-console").

Sessions, login attempts and four-eyes unlock requests live here so the collector's core
schema (collector/store/schema.py) stays the shared contract. Times are integer ms (UTC).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlite_utils import Database, Migrations

from collector.store import schema

__all__ = ["MIGRATIONS", "SCHEMA_SET", "migrate", "migrate_file"]

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


@MIGRATIONS(name="0002_login_throttle_pairs")
def _throttle_pairs(db: Database) -> None:
    # Log-in throttling by (account, address) pair, or (account, known device) for a browser
    # that has logged in to the account before, instead of per address and per account: one
    # address no longer locks out every account behind a proxy, and a wrong-password flood
    # cannot lock a DSL out of their own browser (issue 14).
    db.executescript(
        """
        ALTER TABLE console_login_attempts ADD COLUMN throttle_key TEXT NOT NULL DEFAULT '';
        CREATE INDEX console_login_pair ON console_login_attempts(username, throttle_key, at);
        CREATE TABLE console_known_devices (      -- browsers that logged in to an account
            token_hash TEXT PRIMARY KEY,          -- sha256 of the device cookie
            username TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            last_used_at INTEGER NOT NULL
        );
        CREATE INDEX console_known_devices_user ON console_known_devices(username);
        """
    )


@MIGRATIONS(name="0007_device_sources")
def _device_sources(db: Database) -> None:
    # Each device's per-source health from its latest heartbeat (window, keys, media: state,
    # restarts, last event, last error), so technicians see in the console whether monitoring
    # is really running on a machine (issue 14); JSON list, as drops is a JSON object.
    db.executescript(
        """
        ALTER TABLE devices ADD COLUMN sources TEXT NOT NULL DEFAULT '[]';
        """
    )


@MIGRATIONS(name="0003_four_eyes_notices_audit")
def _four_eyes_notices_audit(db: Database) -> None:
    # Issue 14: four-eyes requests can be declined with a reason (and are shown with their
    # expiry); any account can be named a second approver (a school with one DSL names its
    # headteacher or the trust DSL); the console's notification list remembers when each
    # user last opened it; the scheduled weekly summary is claimed once per site and week;
    # the audit viewer filters by actor, site and action and pages by id.
    db.executescript(
        """
        ALTER TABLE console_unlocks ADD COLUMN declined_by TEXT;
        ALTER TABLE console_unlocks ADD COLUMN declined_at INTEGER;
        ALTER TABLE console_unlocks ADD COLUMN decline_reason TEXT NOT NULL DEFAULT '';
        CREATE INDEX console_unlocks_site ON console_unlocks(site_id, requested_at);
        CREATE INDEX console_unlocks_requester ON console_unlocks(requested_by, requested_at);
        ALTER TABLE users ADD COLUMN second_approver INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE console_notice_seen (        -- when a user last opened /notifications
            username TEXT PRIMARY KEY,
            seen_at INTEGER NOT NULL
        );
        CREATE TABLE weekly_sends (               -- one scheduled weekly summary per site and week
            site_id TEXT NOT NULL,
            week TEXT NOT NULL,                   -- ISO week of the due time, e.g. '2026-W47'
            claimed_at INTEGER NOT NULL,
            claimed_by TEXT NOT NULL DEFAULT '',  -- host:pid of the collector that sent it
            sent_at INTEGER,
            recipients INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (site_id, week)
        );
        CREATE INDEX console_queue_assignee ON queue_items(assignee, status);
        CREATE INDEX audit_actor ON audit(actor, id);
        CREATE INDEX audit_site ON audit(site_id, id);
        CREATE INDEX audit_action ON audit(action, id);
        """
    )


@MIGRATIONS(name="0005_casework_keys")
def _casework_keys(db: Database) -> None:
    # Casework (issue 14): the reason recorded with an action (closing a severity 4-5 item
    # needs one), and indexes for keyset pagination (each ends in id, the key's tie-breaker)
    # of the queue in its default order, by severity, by last seen and per pupil ("assigned
    # to me" uses console_queue_assignee from 0003_four_eyes_notices_audit).
    db.executescript(
        """
        ALTER TABLE queue_actions ADD COLUMN reason TEXT NOT NULL DEFAULT '';
        DROP INDEX IF EXISTS console_queue_status_order;
        CREATE INDEX console_queue_status_keys ON queue_items(
            site_id, status, pinned DESC, priority DESC, last_time_ms DESC, id DESC);
        CREATE INDEX console_queue_order_keys ON queue_items(
            site_id, pinned DESC, priority DESC, last_time_ms DESC, id DESC);
        CREATE INDEX console_queue_last_seen ON queue_items(site_id, last_time_ms DESC, id DESC);
        CREATE INDEX console_queue_severity_keys ON queue_items(
            site_id, severity DESC, last_time_ms DESC, id DESC);
        CREATE INDEX console_queue_pupil_keys ON queue_items(
            site_id, os_user, last_time_ms DESC, id DESC);
        """
    )


@MIGRATIONS(name="0008_user_language")
def _user_language(db: Database) -> None:
    # Wales (issue 14): each account reads the console in its own language ('en' or 'cy',
    # set with `vigil-collector user language` or the switch in the console's footer).
    db.executescript(
        """
        ALTER TABLE users ADD COLUMN language TEXT NOT NULL DEFAULT 'en';
        """
    )


@MIGRATIONS(name="0009_site_wales")
def _site_wales(db: Database) -> None:
    # Wales (issue 14): a Welsh school names its safeguarding lead the Designated
    # Safeguarding Person (DSP, Keeping Learners Safe) instead of the DSL, in the console,
    # exports and emails (`vigil-collector site add --wales` / `site wales SITE --on`).
    db.executescript(
        """
        ALTER TABLE sites ADD COLUMN wales INTEGER NOT NULL DEFAULT 0;
        """
    )

def migrate(db: Database) -> None:
    """Apply every pending console migration (after the core schema). Safe at every start."""
    MIGRATIONS.apply(db)


def migrate_file(db_path: Path) -> None:
    """Apply the core and the console migrations to the SQLite file at ``db_path``."""
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=10)
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        db = Database(conn)
        db.enable_wal()
        schema.migrate(db)
        migrate(db)
    finally:
        conn.close()
