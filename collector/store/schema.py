"""The collector's SQLite schema, as sqlite-utils migrations.

This file is the contract between the ingest path, triage, alerts and the console.
Add a new migration function to change it; never edit one that has shipped.
Times are integer milliseconds since the Unix epoch (UTC) unless the column says otherwise.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

__all__ = ["MIGRATIONS", "SCHEMA_SET", "migrate"]

SCHEMA_SET = "vigil-collector"
MIGRATIONS = Migrations(SCHEMA_SET)


@MIGRATIONS(name="0001_core")
def _core(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE sites (
            id TEXT PRIMARY KEY,                 -- short slug, e.g. 'north-high'
            name TEXT NOT NULL,
            dsl_contacts TEXT NOT NULL DEFAULT '[]',  -- JSON list of emails, in escalation order
            webhook_url TEXT,
            created_at INTEGER NOT NULL
        );
        CREATE TABLE groups (
            site_id TEXT NOT NULL REFERENCES sites(id),
            name TEXT NOT NULL,                  -- e.g. 'year-9', 'laptop-trolley-2'
            age_band TEXT NOT NULL,              -- primary | secondary | sixth_form | staff
            PRIMARY KEY (site_id, name)
        );
        CREATE TABLE enrol_tokens (
            id TEXT PRIMARY KEY,                 -- public handle shown to technicians
            token_hash TEXT NOT NULL UNIQUE,     -- sha256 of the secret; the secret is never stored
            site_id TEXT NOT NULL REFERENCES sites(id),
            group_name TEXT NOT NULL,
            max_uses INTEGER NOT NULL DEFAULT 1,
            uses INTEGER NOT NULL DEFAULT 0,
            expires_at INTEGER NOT NULL,
            revoked_at INTEGER,
            created_by TEXT NOT NULL,
            created_at INTEGER NOT NULL
        );
        CREATE TABLE devices (
            id TEXT PRIMARY KEY,                 -- proto.identity.device_id_from_spki
            site_id TEXT NOT NULL REFERENCES sites(id),
            group_name TEXT NOT NULL,
            hostname TEXT NOT NULL,
            os TEXT NOT NULL,
            agent_version TEXT NOT NULL DEFAULT '',
            rules_version INTEGER NOT NULL DEFAULT 0,
            spool_depth INTEGER NOT NULL DEFAULT 0,
            spool_bytes INTEGER NOT NULL DEFAULT 0,
            drops TEXT NOT NULL DEFAULT '{}',    -- JSON reason -> count, from the last heartbeat
            last_user TEXT NOT NULL DEFAULT '',
            room TEXT,                           -- assigned by a technician
            cert_serial TEXT NOT NULL,
            enrolled_at INTEGER NOT NULL,
            enrol_token_id TEXT,
            last_seen_at INTEGER,
            revoked_at INTEGER
        );
        CREATE INDEX devices_site ON devices(site_id);
        CREATE TABLE pupils (                    -- roster imported from the school's MIS
            site_id TEXT NOT NULL REFERENCES sites(id),
            username TEXT NOT NULL,              -- OS login name
            display_name TEXT NOT NULL,
            year_group TEXT NOT NULL,            -- e.g. 'Year 9', '12', 'Staff'
            age_band TEXT NOT NULL,              -- derived from year_group at import
            PRIMARY KEY (site_id, username)
        );
        CREATE TABLE captures (
            id TEXT PRIMARY KEY,                 -- agent-generated; redelivery is idempotent
            device_id TEXT NOT NULL REFERENCES devices(id),
            site_id TEXT NOT NULL,
            queue_item_id INTEGER,
            os_user TEXT NOT NULL,
            hostname TEXT NOT NULL DEFAULT '',
            time_ms INTEGER NOT NULL,
            last_time_ms INTEGER NOT NULL,
            count INTEGER NOT NULL DEFAULT 1,
            source TEXT NOT NULL,                -- keys | window | media
            rule_id TEXT NOT NULL,
            category TEXT NOT NULL,
            severity INTEGER NOT NULL,
            match TEXT NOT NULL,
            context TEXT NOT NULL,
            window_title TEXT NOT NULL,
            process TEXT NOT NULL,
            match_kind TEXT NOT NULL,            -- exact | normalised
            media TEXT,                          -- JSON MediaInfo or NULL
            screenshot_path TEXT,                -- encrypted file under the data dir, or NULL
            rules_version INTEGER NOT NULL DEFAULT 0,
            received_at INTEGER NOT NULL
        );
        CREATE INDEX captures_queue_item ON captures(queue_item_id);
        CREATE INDEX captures_device_time ON captures(device_id, time_ms);
        CREATE INDEX captures_user_time ON captures(site_id, os_user, time_ms);
        CREATE TABLE queue_items (
            id INTEGER PRIMARY KEY,
            site_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            os_user TEXT NOT NULL,
            rule_id TEXT NOT NULL,
            category TEXT NOT NULL,
            severity INTEGER NOT NULL,
            priority INTEGER NOT NULL,           -- higher is more urgent (triage.score)
            pinned INTEGER NOT NULL DEFAULT 0,   -- 1 for severity 5: always on top
            refer_police INTEGER NOT NULL DEFAULT 0,  -- illegal-imagery categories
            status TEXT NOT NULL DEFAULT 'new',  -- new | in_review | actioned | closed | false_positive
            count INTEGER NOT NULL DEFAULT 1,
            first_time_ms INTEGER NOT NULL,
            last_time_ms INTEGER NOT NULL,
            latest_capture_id TEXT NOT NULL,
            assignee TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            closed_at INTEGER
        );
        CREATE INDEX queue_order ON queue_items(site_id, pinned DESC, priority DESC, last_time_ms DESC);
        CREATE INDEX queue_status ON queue_items(status, updated_at);
        CREATE INDEX queue_dedupe ON queue_items(device_id, os_user, rule_id, last_time_ms);
        CREATE TABLE queue_actions (             -- notes, referrals, status changes by the DSL
            id INTEGER PRIMARY KEY,
            queue_item_id INTEGER NOT NULL REFERENCES queue_items(id),
            actor TEXT NOT NULL,
            action TEXT NOT NULL,                -- e.g. refer_tutor, refer_police, note, status:closed
            note TEXT NOT NULL DEFAULT '',
            at INTEGER NOT NULL
        );
        CREATE INDEX queue_actions_item ON queue_actions(queue_item_id);
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY,
            queue_item_id INTEGER NOT NULL REFERENCES queue_items(id),
            contact_index INTEGER NOT NULL,      -- position in sites.dsl_contacts
            contact TEXT NOT NULL,
            channel TEXT NOT NULL,               -- email | webhook
            sent_at INTEGER,
            error TEXT,
            acknowledged_at INTEGER,
            acknowledged_by TEXT
        );
        CREATE INDEX alerts_item ON alerts(queue_item_id);
        CREATE TABLE rule_versions (
            version INTEGER PRIMARY KEY,
            content_hash TEXT NOT NULL,
            bundle BLOB NOT NULL,                -- signed bundle bytes
            created_at INTEGER NOT NULL,
            published_by TEXT NOT NULL,
            active INTEGER NOT NULL DEFAULT 0,   -- exactly one row is active
            note TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE exemptions (                -- technician exclusions and time-boxed exemptions
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,                  -- exclusion | exemption
            site_id TEXT NOT NULL,
            group_name TEXT,                     -- NULL = whole site
            rule_id TEXT,                        -- NULL = every rule of category
            category TEXT,
            reason TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            starts_at INTEGER NOT NULL,
            expires_at INTEGER,                  -- NULL = until removed (exclusions only)
            removed_at INTEGER
        );
        CREATE TABLE users (
            username TEXT PRIMARY KEY,
            display_name TEXT NOT NULL,
            email TEXT NOT NULL DEFAULT '',
            password_hash TEXT NOT NULL,         -- argon2id
            role TEXT NOT NULL,                  -- dsl | deputy_dsl | technician | governor | trust_admin
            sites TEXT NOT NULL DEFAULT '[]',    -- JSON list of site ids ('*' = all, trust admins)
            created_at INTEGER NOT NULL,
            disabled_at INTEGER
        );
        CREATE TABLE audit (                     -- append-only: triggers forbid UPDATE and DELETE
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at INTEGER NOT NULL,
            actor TEXT NOT NULL,                 -- username, 'cli:<os user>', or 'system'
            action TEXT NOT NULL,                -- e.g. capture.view, export.csv, rules.publish
            target TEXT NOT NULL DEFAULT '',
            site_id TEXT,
            detail TEXT NOT NULL DEFAULT '{}'    -- JSON, never capture content
        );
        CREATE INDEX audit_at ON audit(at);
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
            BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
            WHEN (SELECT count(*) FROM audit_purge_allowed) = 0
            BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
        -- The retention purge inserts one row here inside its transaction to remove audit rows
        -- older than the audit retention period, then deletes it again.
        CREATE TABLE audit_purge_allowed (token INTEGER);
        """
    )


def migrate(db: Database) -> None:
    """Apply every pending migration. Safe to call at every start."""
    MIGRATIONS.apply(db)


@MIGRATIONS(name="0003_capture_reasons")
def _capture_reasons(db: Database) -> None:
    # Why each capture fired (JSON list of short strings: phrases and weights, obfuscation
    # seen through, the scorer's category, score and model version) and its score.
    db.executescript(
        """
        ALTER TABLE captures ADD COLUMN reasons TEXT NOT NULL DEFAULT '[]';
        ALTER TABLE captures ADD COLUMN score REAL;
        """
    )


@MIGRATIONS(name="0002_collector_runtime")
def _collector_runtime(db: Database) -> None:
    # Per-device answers to pushed rule bundles, the exemption that kept a capture out of
    # the queue (NULL = queued normally), and indexes for retention and per-pupil triage.
    db.executescript(
        """
        CREATE TABLE rules_acks (
            device_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            applied INTEGER NOT NULL,
            error TEXT NOT NULL DEFAULT '',
            at INTEGER NOT NULL,
            PRIMARY KEY (device_id, version)
        );
        ALTER TABLE captures ADD COLUMN exemption_id INTEGER;
        CREATE INDEX captures_received ON captures(received_at);
        CREATE INDEX queue_user ON queue_items(site_id, os_user, last_time_ms);
        """
    )
