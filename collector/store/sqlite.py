"""SQLite implementation of :class:`collector.store.base.Store` (sqlite-utils 4, WAL)."""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from collector import triage
from collector.store import schema
from collector.store.base import (
    AlertRow,
    DeviceExists,
    DeviceRow,
    Heartbeat,
    IngestResult,
    NewCapture,
    PurgePolicy,
    PurgeReport,
    QueueItemRow,
    RulesAckRow,
    RuleVersion,
    SiteRow,
    StoreBusy,
    TokenError,
    TokenInfo,
)
from collector.store.screenshots import ensure_key, write_screenshot

__all__ = ["BULK_INSERT_MODES", "SqliteStore", "hash_token", "open_store"]

_BUSY_MARKERS = ("locked", "busy", "full", "disk i/o", "readonly", "read-only")
_CAPTURE_COLS = (
    "id", "device_id", "site_id", "os_user", "hostname", "time_ms", "last_time_ms", "count",
    "source", "rule_id", "category", "severity", "match", "context", "window_title", "process",
    "match_kind", "media", "rules_version", "received_at", "screenshot_path", "queue_item_id",
    "exemption_id", "reasons", "score",
)
_DAY = 86_400_000
_INSERT_CAPTURE = (f"INSERT INTO captures ({', '.join(_CAPTURE_COLS)}) VALUES "
                   f"({', '.join('?' * len(_CAPTURE_COLS))})")
BULK_INSERT_MODES = ("executemany", "insert_all")


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _now() -> int:
    return int(time.time() * 1000)


def _chunks(seq: Sequence[str], n: int = 500) -> Iterator[Sequence[str]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


class SqliteStore:
    """One connection; safe to share between threads (calls are serialised by a lock)."""

    def __init__(self, db_path: Path, data_dir: Path | None = None, busy_timeout_ms: int = 5000,
                 bulk_insert: str = "executemany"):
        if bulk_insert not in BULK_INSERT_MODES:
            raise ValueError(f"bulk_insert must be one of {BULK_INSERT_MODES}, not "
                             f"{bulk_insert!r} (config key ingest.bulk_insert)")
        self.bulk_insert = bulk_insert
        self.db_path = Path(db_path)
        self.data_dir = Path(data_dir) if data_dir else self.db_path.parent
        conn = sqlite3.connect(str(self.db_path), check_same_thread=False,
                               timeout=busy_timeout_ms / 1000)
        self.db = Database(conn)
        self.db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        self.db.execute("PRAGMA foreign_keys=OFF")
        self.db.execute("PRAGMA synchronous=NORMAL")
        # Deleted rows are overwritten, not left in free pages: purged safeguarding data must
        # not be recoverable from the file (see purge(), which also truncates the WAL).
        self.db.execute("PRAGMA secure_delete=ON")
        self._lock = threading.RLock()
        self._key: bytes | None = None

    # -- plumbing --------------------------------------------------------------------------
    def migrate(self) -> None:
        with self._lock:
            self.db.enable_wal()
            schema.migrate(self.db)

    def close(self) -> None:
        with self._lock:
            self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[Database]:
        # BEGIN IMMEDIATE takes the write lock up front, waiting up to busy_timeout. A deferred
        # BEGIN that reads first cannot wait when it upgrades to a write after another
        # connection (the control connection, the console, a CLI) committed meanwhile: SQLite
        # fails it at once with "database is locked" (SQLITE_BUSY_SNAPSHOT). Under load that
        # refused whole ingest batches (found by bench/scale.py; docs/benchmarks-method.md).
        with self._lock:
            conn = self.db.conn
            try:
                if conn.in_transaction:
                    with self.db.atomic():
                        yield self.db
                    return
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self.db
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if any(m in str(exc).lower() for m in _BUSY_MARKERS):
                    raise StoreBusy(f"store unavailable: {exc}") from exc
                raise

    def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()
              ) -> list[dict[str, Any]]:
        with self._lock:
            cur = self.db.conn.execute(sql, params)
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    # -- sites, groups, audit ----------------------------------------------------------------
    def ensure_site(self, site_id: str, name: str, now_ms: int) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO sites (id, name, created_at) VALUES (?, ?, ?)",
                (site_id, name, now_ms),
            )
            return cur.rowcount > 0

    def get_site(self, site_id: str) -> SiteRow | None:
        rows = self._rows("SELECT * FROM sites WHERE id = ?", (site_id,))
        if not rows:
            return None
        r = rows[0]
        return SiteRow(r["id"], r["name"], json.loads(r["dsl_contacts"]), r["webhook_url"])

    def set_site_contacts(
        self, site_id: str, contacts: Sequence[str], webhook_url: str | None
    ) -> None:
        with self._tx() as db:
            db.execute("UPDATE sites SET dsl_contacts = ?, webhook_url = ? WHERE id = ?",
                       (json.dumps(list(contacts)), webhook_url, site_id))

    def ensure_group(self, site_id: str, name: str, age_band: str) -> str:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO groups (site_id, name, age_band) VALUES (?, ?, ?)",
                       (site_id, name, age_band))
            row = db.execute("SELECT age_band FROM groups WHERE site_id = ? AND name = ?",
                             (site_id, name)).fetchone()
            return str(row[0])

    def audit(self, actor: str, action: str, target: str = "", site_id: str | None = None,
              detail: dict[str, Any] | None = None, now_ms: int | None = None) -> None:
        with self._tx() as db:
            self._audit(db, actor, action, target, site_id, detail, now_ms)

    @staticmethod
    def _audit(db: Database, actor: str, action: str, target: str = "",
               site_id: str | None = None, detail: dict[str, Any] | None = None,
               now_ms: int | None = None) -> None:
        db.execute(
            "INSERT INTO audit (at, actor, action, target, site_id, detail) VALUES (?,?,?,?,?,?)",
            (now_ms if now_ms is not None else _now(), actor, action, target, site_id,
             json.dumps(detail or {}, sort_keys=True)),
        )

    def audit_rows(self, action: str | None = None) -> list[dict[str, Any]]:
        if action is None:
            return [dict(r) for r in self._rows("SELECT * FROM audit ORDER BY id")]
        return [dict(r) for r in
                self._rows("SELECT * FROM audit WHERE action = ? ORDER BY id", (action,))]

    # -- enrolment ---------------------------------------------------------------------------
    def create_token(self, site_id: str, group_name: str, max_uses: int, expires_at: int,
                     created_by: str, now_ms: int) -> tuple[TokenInfo, str]:
        secret = "vgl_" + secrets.token_urlsafe(24)
        tid = "t-" + secrets.token_hex(4)
        with self._tx() as db:
            db.execute(
                "INSERT INTO enrol_tokens (id, token_hash, site_id, group_name, max_uses, "
                "expires_at, created_by, created_at) VALUES (?,?,?,?,?,?,?,?)",
                (tid, hash_token(secret), site_id, group_name, max_uses, expires_at,
                 created_by, now_ms),
            )
        return TokenInfo(tid, site_id, group_name, max_uses, 0, expires_at, None, created_by,
                         now_ms), secret

    def revoke_token(self, token_id: str, now_ms: int) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE enrol_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now_ms, token_id))
            return cur.rowcount > 0

    def list_tokens(self) -> list[TokenInfo]:
        return [self._token(r) for r in self._rows(
            "SELECT * FROM enrol_tokens ORDER BY created_at, id")]

    @staticmethod
    def _token(r: dict[str, Any]) -> TokenInfo:
        return TokenInfo(r["id"], r["site_id"], r["group_name"], r["max_uses"], r["uses"],
                         r["expires_at"], r["revoked_at"], r["created_by"], r["created_at"])

    def check_token(self, token_secret: str, now_ms: int) -> TokenInfo:
        rows = self._rows("SELECT * FROM enrol_tokens WHERE token_hash = ?",
                          (hash_token(token_secret),))
        if not rows:
            raise TokenError("unknown")
        tok = self._token(rows[0])
        if tok.revoked_at is not None:
            raise TokenError("revoked")
        if tok.expires_at <= now_ms:
            raise TokenError("expired")
        if tok.uses >= tok.max_uses:
            raise TokenError("used_up")
        return tok

    def device_exists(self, device_id: str) -> bool:
        return bool(self._rows("SELECT 1 FROM devices WHERE id = ?", (device_id,)))

    def enrol_device(self, token_secret: str, device_id: str, hostname: str, os: str,
                     agent_version: str, cert_serial: str, now_ms: int) -> DeviceRow:
        with self._tx() as db:
            tok = self.check_token(token_secret, now_ms)
            if self.device_exists(device_id):
                raise DeviceExists(f"device {device_id} is already enrolled")
            cur = db.execute(
                "UPDATE enrol_tokens SET uses = uses + 1 WHERE id = ? AND uses < max_uses",
                (tok.id,))
            if cur.rowcount != 1:
                raise TokenError("used_up")
            db.execute(
                "INSERT INTO devices (id, site_id, group_name, hostname, os, agent_version, "
                "cert_serial, enrolled_at, enrol_token_id) VALUES (?,?,?,?,?,?,?,?,?)",
                (device_id, tok.site_id, tok.group_name, hostname, os, agent_version,
                 cert_serial, now_ms, tok.id))
            self._audit(db, "system", "device.enrol", device_id, tok.site_id,
                        {"token": tok.id, "hostname": hostname, "group": tok.group_name}, now_ms)
        dev = self.get_device(device_id)
        assert dev is not None
        return dev

    # -- devices -----------------------------------------------------------------------------
    _DEVICE_SQL = (
        "SELECT d.*, COALESCE(g.age_band, d.group_name) AS age_band FROM devices d "
        "LEFT JOIN groups g ON g.site_id = d.site_id AND g.name = d.group_name"
    )

    @staticmethod
    def _device(r: dict[str, Any]) -> DeviceRow:
        return DeviceRow(
            r["id"], r["site_id"], r["group_name"], r["age_band"], r["hostname"], r["os"],
            r["agent_version"], r["rules_version"], r["spool_depth"], r["spool_bytes"],
            json.loads(r["drops"] or "{}"), r["last_user"], r["cert_serial"], r["enrolled_at"],
            r["last_seen_at"], r["revoked_at"])

    def get_device(self, device_id: str) -> DeviceRow | None:
        rows = self._rows(self._DEVICE_SQL + " WHERE d.id = ?", (device_id,))
        return self._device(rows[0]) if rows else None

    def list_devices(self, silent_since_ms: int | None = None) -> list[DeviceRow]:
        if silent_since_ms is None:
            rows = self._rows(self._DEVICE_SQL + " ORDER BY d.site_id, d.hostname")
        else:
            rows = self._rows(
                self._DEVICE_SQL + " WHERE COALESCE(d.last_seen_at, d.enrolled_at) < ? "
                "AND d.revoked_at IS NULL ORDER BY d.last_seen_at", (silent_since_ms,))
        return [self._device(r) for r in rows]

    def revoke_device(self, device_id: str, now_ms: int) -> bool:
        with self._tx() as db:
            cur = db.execute("UPDATE devices SET revoked_at = ? WHERE id = ? "
                             "AND revoked_at IS NULL", (now_ms, device_id))
            return cur.rowcount > 0

    def revoked_since(self, since_ms: int) -> list[str]:
        """Devices revoked at or after ``since_ms`` (serve closes their live streams)."""
        return [r["id"] for r in self._rows(
            "SELECT id FROM devices WHERE revoked_at IS NOT NULL AND revoked_at >= ?",
            (since_ms,))]

    def pupil_age_band(self, site_id: str, username: str) -> str | None:
        """The roster's age band for this login at this site (None when not on the roster)."""
        rows = self._rows("SELECT age_band FROM pupils WHERE site_id = ? AND username = ?",
                          (site_id, username))
        return str(rows[0]["age_band"]) if rows else None

    # -- ingest ------------------------------------------------------------------------------
    def ingest(self, captures: Sequence[NewCapture], now_ms: int, policy: triage.TriagePolicy,
               heartbeats: Sequence[Heartbeat] = (),
               rules_acks: Sequence[RulesAckRow] = ()) -> IngestResult:
        """Store captures (new ids only), triage them into the queue, apply heartbeats and
        rules acks: all in one transaction."""
        result = IngestResult()
        with self._tx() as db:
            if heartbeats:
                db.conn.executemany(
                    "UPDATE devices SET agent_version = ?, rules_version = ?, spool_depth = ?, "
                    "spool_bytes = ?, drops = ?, last_user = ?, hostname = "
                    "CASE WHEN ? != '' THEN ? ELSE hostname END, last_seen_at = ? WHERE id = ?",
                    [(h.agent_version, h.rules_version, h.spool_depth, h.spool_bytes,
                      json.dumps(h.drops, sort_keys=True), h.os_user, h.hostname, h.hostname,
                      h.at, h.device_id) for h in heartbeats])
            if rules_acks:
                db.conn.executemany(
                    "INSERT OR REPLACE INTO rules_acks (device_id, version, applied, error, at) "
                    "VALUES (?,?,?,?,?)",
                    [(a.device_id, a.version, int(a.applied), a.error, a.at) for a in rules_acks])
            if captures:
                self._ingest_captures(db, captures, now_ms, policy, result)
        return result

    def _ingest_captures(self, db: Database, captures: Sequence[NewCapture], now_ms: int,
                         policy: triage.TriagePolicy, result: IngestResult) -> None:
        unique: dict[str, NewCapture] = {}
        for c in captures:
            first = unique.setdefault(c.id, c)
            if first.device_id != c.device_id:
                result.conflicts.add((c.id, c.device_id))
        owner: dict[str, str] = {}
        for chunk in _chunks(list(unique)):
            q = ",".join("?" * len(chunk))
            owner.update(db.conn.execute(
                f"SELECT id, device_id FROM captures WHERE id IN ({q})", list(chunk)))
        # An id already stored for ANOTHER device is not a redelivery: never ack it as stored.
        for cid, c in list(unique.items()):
            if cid in owner and owner[cid] != c.device_id:
                result.conflicts.add((cid, c.device_id))
                del unique[cid]
        new = [c for cid, c in unique.items() if cid not in owner]
        result.existing_ids = [cid for cid in unique if cid in owner]
        result.stored_ids = [c.id for c in new]
        if not new:
            return
        facts = [triage.CaptureFacts(
            c.id, c.device_id, c.site_id, c.group_name, c.os_user, c.rule_id, c.category,
            c.severity, c.match_kind, c.time_ms, c.last_time_ms, c.count) for c in new]
        keys = {f.key for f in facts}
        open_items: dict[triage.Key, triage.OpenItem] = {}
        for dev, user, rule in keys:
            row = db.conn.execute(
                "SELECT id, status, count, first_time_ms, last_time_ms, severity, priority "
                "FROM queue_items WHERE device_id = ? AND os_user = ? AND rule_id = ? "
                "ORDER BY last_time_ms DESC LIMIT 1", (dev, user, rule)).fetchone()
            if row:
                open_items[(dev, user, rule)] = triage.OpenItem(*row)
        # Each pupil's last 24 h, from the queue (merged items, so far fewer rows than
        # captures): sum of counts and the set of categories.
        history: dict[tuple[str, str], triage.UserHistory] = {}
        since = min(f.time_ms for f in facts) - triage.DAY_MS
        for site, user in {(f.site_id, f.os_user) for f in facts}:
            n, cats = 0, set()
            for cat, cnt in db.conn.execute(
                "SELECT category, SUM(count) FROM queue_items WHERE site_id = ? AND os_user = ? "
                "AND last_time_ms >= ? GROUP BY category", (site, user, since)):
                cats.add(cat)
                n += int(cnt)
            history[(site, user)] = triage.UserHistory(n, frozenset(cats))
        exemptions = self._active_exemptions(db, {f.site_id for f in facts}, now_ms)
        plan = triage.plan(facts, open_items, history, exemptions, now_ms, policy)
        item_of: dict[str, int] = {}
        for it in plan.items:
            dev, user, rule = it.key
            if it.existing_id is None:
                cur = db.conn.execute(
                    "INSERT INTO queue_items (site_id, device_id, os_user, rule_id, category, "
                    "severity, priority, pinned, refer_police, count, first_time_ms, "
                    "last_time_ms, latest_capture_id, created_at, updated_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (it.site_id, dev, user, rule, it.category, it.severity, it.priority,
                     int(it.pinned), int(it.refer_police), it.count, it.first_time_ms,
                     it.last_time_ms, it.latest_capture_id, now_ms, now_ms))
                item_id = int(cur.lastrowid or 0)
                status = "new"
            else:
                item_id = it.existing_id
                db.conn.execute(
                    "UPDATE queue_items SET count = ?, severity = ?, priority = ?, pinned = ?, "
                    "refer_police = MAX(refer_police, ?), first_time_ms = ?, last_time_ms = ?, "
                    "latest_capture_id = ?, updated_at = ? WHERE id = ?",
                    (it.count, it.severity, it.priority, int(it.pinned), int(it.refer_police),
                     it.first_time_ms, it.last_time_ms, it.latest_capture_id, now_ms, item_id))
                status = open_items[it.key].status
            for cid in it.capture_ids:
                item_of[cid] = item_id
            result.items.append(QueueItemRow(
                item_id, it.site_id, dev, user, rule, it.category, it.severity, it.priority,
                it.pinned, it.refer_police, status, it.count, it.first_time_ms,
                it.last_time_ms, created=it.existing_id is None))
        key: bytes | None = None
        records = []
        for c in new:
            shot = None
            if c.screenshot and c.category not in triage.ILLEGAL_CATEGORIES:
                if key is None:
                    key = self._screenshot_key()
                shot = write_screenshot(self.data_dir, c.id, c.screenshot, key)
            records.append((
                c.id, c.device_id, c.site_id, c.os_user, c.hostname, c.time_ms, c.last_time_ms,
                c.count, c.source, c.rule_id, c.category, c.severity, c.match, c.context,
                c.window_title, c.process, c.match_kind, c.media, c.rules_version,
                c.received_at, shot, item_of.get(c.id), plan.exempted.get(c.id), c.reasons,
                c.score))
        if self.bulk_insert == "insert_all":
            rows: list[Any] = [list(_CAPTURE_COLS), *records]  # list-based insert_all
            db.table("captures").insert_all(rows, batch_size=1000)
        else:
            # Same transaction, same rows; ~4x faster than insert_all, whose per-value
            # jsonify step dominates at this volume (see bench/collector.py).
            db.conn.executemany(_INSERT_CAPTURE, records)

    def _screenshot_key(self) -> bytes:
        if self._key is None:
            self._key = ensure_key(self.data_dir)
        return self._key

    @staticmethod
    def _active_exemptions(db: Database, sites: set[str], now_ms: int) -> list[triage.Exemption]:
        out = []
        for r in db.conn.execute(
            "SELECT id, kind, site_id, group_name, rule_id, category, starts_at, expires_at "
            "FROM exemptions WHERE removed_at IS NULL AND starts_at <= ? "
            "AND (expires_at IS NULL OR expires_at > ?)", (now_ms, now_ms)):
            if r[2] in sites:
                out.append(triage.Exemption(*r))
        return out

    def rules_acks(self, device_id: str) -> list[RulesAckRow]:
        return [RulesAckRow(r["device_id"], r["version"], bool(r["applied"]), r["error"], r["at"])
                for r in self._rows("SELECT * FROM rules_acks WHERE device_id = ? "
                                    "ORDER BY version", (device_id,))]

    def get_queue_item(self, item_id: int) -> QueueItemRow | None:
        rows = self._rows("SELECT * FROM queue_items WHERE id = ?", (item_id,))
        if not rows:
            return None
        r = rows[0]
        return QueueItemRow(r["id"], r["site_id"], r["device_id"], r["os_user"], r["rule_id"],
                            r["category"], r["severity"], r["priority"], bool(r["pinned"]),
                            bool(r["refer_police"]), r["status"], r["count"],
                            r["first_time_ms"], r["last_time_ms"])

    def set_queue_status(self, item_id: int, status: str, actor: str, now_ms: int) -> None:
        if status not in triage.STATUSES:
            raise ValueError(f"status must be one of {triage.STATUSES}, not {status!r}")
        closed = now_ms if status in ("closed", "false_positive", "actioned") else None
        with self._tx() as db:
            db.execute("UPDATE queue_items SET status = ?, updated_at = ?, closed_at = ? "
                       "WHERE id = ?", (status, now_ms, closed, item_id))
            db.execute("INSERT INTO queue_actions (queue_item_id, actor, action, at) "
                       "VALUES (?,?,?,?)", (item_id, actor, f"status:{status}", now_ms))
            self._audit(db, actor, "queue.status", str(item_id), None, {"status": status},
                        now_ms)

    def capture_ids_for_item(self, item_id: int) -> list[str]:
        return [r["id"] for r in self._rows(
            "SELECT id FROM captures WHERE queue_item_id = ? ORDER BY time_ms, id", (item_id,))]

    # -- rules -------------------------------------------------------------------------------
    def next_rule_version(self) -> int:
        rows = self._rows("SELECT COALESCE(MAX(version), 0) AS v FROM rule_versions")
        return int(rows[0]["v"]) + 1

    def add_rule_version(self, version: int, content_hash: str, bundle: bytes,
                         published_by: str, note: str, now_ms: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE rule_versions SET active = 0 WHERE active = 1")
            db.execute(
                "INSERT INTO rule_versions (version, content_hash, bundle, created_at, "
                "published_by, active, note) VALUES (?,?,?,?,?,1,?)",
                (version, content_hash, bundle, now_ms, published_by, note))

    @staticmethod
    def _rv(r: dict[str, Any], with_bundle: bool) -> RuleVersion:
        return RuleVersion(r["version"], r["content_hash"], r["created_at"], r["published_by"],
                           bool(r["active"]), r["note"],
                           bytes(r["bundle"]) if with_bundle else b"")

    def active_rule_version(self) -> RuleVersion | None:
        rows = self._rows("SELECT * FROM rule_versions WHERE active = 1")
        return self._rv(rows[0], True) if rows else None

    def active_rule_version_number(self) -> int:
        """0 when nothing is published. Cheap: what ``serve`` polls."""
        rows = self._rows("SELECT version FROM rule_versions WHERE active = 1")
        return int(rows[0]["version"]) if rows else 0

    def list_rule_versions(self) -> list[RuleVersion]:
        return [self._rv(r, False) for r in self._rows(
            "SELECT version, content_hash, created_at, published_by, active, note "
            "FROM rule_versions ORDER BY version")]

    def get_rule_version(self, version: int) -> RuleVersion | None:
        rows = self._rows("SELECT * FROM rule_versions WHERE version = ?", (version,))
        return self._rv(rows[0], True) if rows else None

    # -- exemptions --------------------------------------------------------------------------
    def add_exemption(self, kind: str, site_id: str, reason: str, created_by: str, now_ms: int,
                      group_name: str | None = None, rule_id: str | None = None,
                      category: str | None = None, starts_at: int | None = None,
                      expires_at: int | None = None) -> int:
        if kind not in ("exclusion", "exemption"):
            raise ValueError("kind must be 'exclusion' or 'exemption'")
        if not reason.strip():
            raise ValueError("a written reason is required")
        if kind == "exemption" and expires_at is None:
            raise ValueError("an exemption is time-boxed: give it an expiry")
        if rule_id is None and category is None:
            raise ValueError("name a rule or a category to exclude")
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO exemptions (kind, site_id, group_name, rule_id, category, reason, "
                "created_by, created_at, starts_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (kind, site_id, group_name, rule_id, category, reason, created_by, now_ms,
                 starts_at if starts_at is not None else now_ms, expires_at))
            eid = int(cur.lastrowid or 0)
            self._audit(db, created_by, f"{kind}.add", str(eid), site_id,
                        {"group": group_name, "rule": rule_id, "category": category,
                         "reason": reason, "expires_at": expires_at}, now_ms)
        return eid

    def remove_exemption(self, exemption_id: int, now_ms: int) -> bool:
        with self._tx() as db:
            cur = db.execute("UPDATE exemptions SET removed_at = ? WHERE id = ? "
                             "AND removed_at IS NULL", (now_ms, exemption_id))
            return cur.rowcount > 0

    # -- alerts ------------------------------------------------------------------------------
    def record_alert(self, queue_item_id: int, contact_index: int, contact: str, channel: str,
                     sent_at: int | None, error: str | None) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO alerts (queue_item_id, contact_index, contact, channel, sent_at, "
                "error) VALUES (?,?,?,?,?,?)",
                (queue_item_id, contact_index, contact, channel, sent_at, error))
            return int(cur.lastrowid or 0)

    def alerts_for_item(self, queue_item_id: int) -> list[AlertRow]:
        return [AlertRow(r["id"], r["queue_item_id"], r["contact_index"], r["contact"],
                         r["channel"], r["sent_at"], r["error"], r["acknowledged_at"])
                for r in self._rows("SELECT * FROM alerts WHERE queue_item_id = ? ORDER BY id",
                                    (queue_item_id,))]

    def acknowledge_alerts(self, queue_item_id: int, by: str, now_ms: int) -> int:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE alerts SET acknowledged_at = ?, acknowledged_by = ? "
                "WHERE queue_item_id = ? AND acknowledged_at IS NULL", (now_ms, by, queue_item_id))
            self._audit(db, by, "alert.acknowledge", str(queue_item_id), None, {}, now_ms)
            return cur.rowcount

    def unacknowledged_alerted_items(self) -> list[int]:
        """Items that were alerted by email, nobody acknowledged, and are still ``new``."""
        return [r["queue_item_id"] for r in self._rows(
            "SELECT a.queue_item_id FROM alerts a JOIN queue_items q ON q.id = a.queue_item_id "
            "WHERE a.channel = 'email' AND q.status = 'new' GROUP BY a.queue_item_id "
            "HAVING SUM(a.acknowledged_at IS NOT NULL) = 0 ORDER BY a.queue_item_id")]

    # -- retention ---------------------------------------------------------------------------
    def purge(self, now_ms: int, policy: PurgePolicy, dry_run: bool = False) -> PurgeReport:
        report = PurgeReport(dry_run=dry_run)
        fp_before = now_ms - policy.false_positive_days * _DAY
        closed_before = now_ms - policy.closed_days * _DAY
        audit_before = now_ms - policy.audit_days * _DAY
        shots: list[str] = []
        with self._tx() as db:
            items = [r[0] for r in db.conn.execute(
                "SELECT id FROM queue_items WHERE (status = 'false_positive' AND updated_at < ?) "
                "OR (status IN ('closed', 'actioned') AND COALESCE(closed_at, updated_at) < ?)",
                (fp_before, closed_before))]
            caps: list[tuple[str, str | None]] = []
            for chunk in _chunks([str(i) for i in items]):
                q = ",".join("?" * len(chunk))
                caps += db.conn.execute(
                    f"SELECT id, screenshot_path FROM captures WHERE queue_item_id IN ({q})",
                    list(chunk)).fetchall()
            caps += db.conn.execute(
                "SELECT id, screenshot_path FROM captures WHERE queue_item_id IS NULL "
                "AND received_at < ?", (closed_before,)).fetchall()
            shots = [p for _, p in caps if p]
            report.queue_items, report.captures, report.screenshots = (
                len(items), len(caps), len(shots))
            report.audit_rows = db.conn.execute(
                "SELECT COUNT(*) FROM audit WHERE at < ?", (audit_before,)).fetchone()[0]
            if not dry_run:
                for chunk in _chunks([c for c, _ in caps]):
                    q = ",".join("?" * len(chunk))
                    db.conn.execute(f"DELETE FROM captures WHERE id IN ({q})", list(chunk))
                for chunk in _chunks([str(i) for i in items]):
                    q = ",".join("?" * len(chunk))
                    for table in ("queue_actions", "alerts"):
                        db.conn.execute(f"DELETE FROM {table} WHERE queue_item_id IN ({q})",
                                        list(chunk))
                    db.conn.execute(f"DELETE FROM queue_items WHERE id IN ({q})", list(chunk))
                if report.audit_rows:
                    db.conn.execute("INSERT INTO audit_purge_allowed (token) VALUES (1)")
                    db.conn.execute("DELETE FROM audit WHERE at < ?", (audit_before,))
                    db.conn.execute("DELETE FROM audit_purge_allowed")
        if not dry_run:
            for rel in shots:
                (self.data_dir / rel).unlink(missing_ok=True)
            # The WAL still holds earlier images of the purged pages: checkpoint them into
            # the (securely deleted) main file and truncate the WAL to zero bytes.
            with self._lock:
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return report


def open_store(db_path: Path, data_dir: Path | None = None, busy_timeout_ms: int = 5000,
               migrate: bool = True, bulk_insert: str = "executemany") -> SqliteStore:
    store = SqliteStore(db_path, data_dir, busy_timeout_ms, bulk_insert)
    if migrate:
        store.migrate()
    return store
