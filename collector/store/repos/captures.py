"""Captures and the DSL queue they feed: the set-wise primitives of one ingest batch, queue
items, exemptions and alerts.

Ingest is orchestrated by :mod:`collector.services.ingest`, which calls these methods inside
one ``with store.transaction():``. Each primitive is one or a few set-based statements over the
whole batch (never one statement per capture), so a batch of 1,000 captures costs about six
round trips on either backend.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from collector.domain import triage
from collector.domain.lifecycle import transition
from collector.store.base import (
    AlertRow,
    Heartbeat,
    NewCapture,
    QueueItemRow,
    RulesAckRow,
)
from collector.store.sql import Db, in_list

__all__ = ["CAPTURE_COLUMNS", "CapturesRepo"]

#: Columns of ``captures`` in the order :meth:`CapturesRepo.insert_captures` takes them.
CAPTURE_COLUMNS = (
    "id", "device_id", "site_id", "os_user", "hostname", "time_ms", "last_time_ms", "count",
    "source", "rule_id", "category", "severity", "match", "context", "window_title", "process",
    "match_kind", "media", "rules_version", "received_at", "screenshot_path", "queue_item_id",
    "exemption_id", "reasons", "score",
)
_INSERT_CAPTURE = (f"INSERT INTO captures ({', '.join(CAPTURE_COLUMNS)}) VALUES "
                   f"({', '.join('?' * len(CAPTURE_COLUMNS))})")
_CHUNK = 300  # rows per IN (...) / VALUES list: well under both backends' parameter limits


def _chunks(seq: Sequence[Any], n: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i: i + n]


def _values(rows: Sequence[tuple[Any, ...]]) -> tuple[str, list[Any]]:
    """``VALUES (?, ?), (?, ?)`` for row-value IN lists, and the flat parameters."""
    width = len(rows[0])
    one = "(" + ", ".join("?" * width) + ")"
    return "VALUES " + ", ".join([one] * len(rows)), [v for r in rows for v in r]


def _item(r: Mapping[str, Any]) -> QueueItemRow:
    return QueueItemRow(r["id"], r["site_id"], r["device_id"], r["os_user"], r["rule_id"],
                        r["category"], r["severity"], r["priority"], bool(r["pinned"]),
                        bool(r["refer_police"]), r["status"], r["count"], r["first_time_ms"],
                        r["last_time_ms"])


class CapturesRepo:
    db: Db

    if TYPE_CHECKING:  # provided by AuditRepo in the store class
        def audit(self, actor: str, action: str, target: str = "", site_id: str | None = None,
                  detail: dict[str, Any] | None = None, now_ms: int | None = None) -> None: ...

    # -- backend hooks -----------------------------------------------------------------------
    def allocate_queue_item_ids(self, n: int) -> list[int]:
        """``n`` fresh queue item ids, inside the ingest transaction. SQLite: after the
        current maximum (the write lock is held, as INTEGER PRIMARY KEY would do);
        PostgreSQL overrides this with its sequence."""
        top = int(self.db.scalar("SELECT COALESCE(MAX(id), 0) FROM queue_items"))
        return list(range(top + 1, top + 1 + n))

    def queue_changed(self, item_ids: Sequence[int]) -> None:
        """Backend hook, called inside the transaction that changed these items
        (PostgreSQL: NOTIFY, so every collector's console and alerter hear it)."""

    # -- one ingest batch (call inside store.transaction()) ----------------------------------
    def apply_heartbeats(self, heartbeats: Sequence[Heartbeat]) -> None:
        """Device health from each heartbeat: versions, spool, drops, user, last seen."""
        if not heartbeats:
            return
        self.db.executemany(
            "UPDATE devices SET agent_version = ?, rules_version = ?, spool_depth = ?, "
            "spool_bytes = ?, drops = ?, sources = ?, last_user = ?, hostname = "
            "CASE WHEN ? <> '' THEN ? ELSE hostname END, last_seen_at = ? WHERE id = ?",
            [(h.agent_version, h.rules_version, h.spool_depth, h.spool_bytes,
              json.dumps(h.drops, sort_keys=True),
              json.dumps([dataclasses.asdict(x) for x in h.sources]), h.os_user, h.hostname,
              h.hostname, h.at, h.device_id) for h in heartbeats])

    def apply_rules_acks(self, acks: Sequence[RulesAckRow]) -> None:
        """Each device's answer for a rule version (the newest answer wins)."""
        if not acks:
            return
        self.db.executemany(
            "INSERT INTO rules_acks (device_id, version, applied, error, at) VALUES (?,?,?,?,?) "
            "ON CONFLICT (device_id, version) DO UPDATE SET applied = excluded.applied, "
            "error = excluded.error, at = excluded.at",
            [(a.device_id, a.version, int(a.applied), a.error, a.at) for a in acks])

    def capture_owners(self, capture_ids: Sequence[str]) -> dict[str, str]:
        """capture id -> owning device id, for the ids already stored."""
        out: dict[str, str] = {}
        for chunk in _chunks(list(capture_ids)):
            where, params = in_list("id", chunk)
            for r in self.db.rows(f"SELECT id, device_id FROM captures WHERE {where}", params):
                out[r["id"]] = r["device_id"]
        return out

    def latest_items(self, keys: Iterable[triage.Key]) -> dict[triage.Key, triage.OpenItem]:
        """For each (device, user, rule): its newest queue item, whatever its status."""
        out: dict[triage.Key, triage.OpenItem] = {}
        best: dict[triage.Key, int] = {}
        for chunk in _chunks(sorted(set(keys))):
            values, params = _values(chunk)
            for r in self.db.rows(
                    "SELECT device_id, os_user, rule_id, id, status, count, first_time_ms, "
                    "last_time_ms, severity, priority FROM queue_items "
                    f"WHERE (device_id, os_user, rule_id) IN ({values})", params):
                key = (r["device_id"], r["os_user"], r["rule_id"])
                rank = r["last_time_ms"]
                if key not in best or rank > best[key]:
                    best[key] = rank
                    out[key] = triage.OpenItem(r["id"], r["status"], r["count"],
                                               r["first_time_ms"], r["last_time_ms"],
                                               r["severity"], r["priority"])
        return out

    def user_history(self, pupils: Iterable[tuple[str, str]], since_ms: int
                     ) -> dict[tuple[str, str], triage.UserHistory]:
        """Each (site, user)'s captures and categories since ``since_ms``, from the queue
        (merged items, so far fewer rows than captures)."""
        pairs = sorted(set(pupils))
        counts: dict[tuple[str, str], int] = dict.fromkeys(pairs, 0)
        cats: dict[tuple[str, str], set[str]] = {p: set() for p in pairs}
        for chunk in _chunks(pairs):
            values, params = _values(chunk)
            for r in self.db.rows(
                    "SELECT site_id, os_user, category, SUM(count) AS n FROM queue_items "
                    f"WHERE (site_id, os_user) IN ({values}) AND last_time_ms >= ? "
                    "GROUP BY site_id, os_user, category", [*params, since_ms]):
                key = (r["site_id"], r["os_user"])
                counts[key] += int(r["n"])
                cats[key].add(r["category"])
        return {p: triage.UserHistory(counts[p], frozenset(cats[p])) for p in pairs}

    def active_exemptions(self, sites: Iterable[str], now_ms: int) -> list[triage.Exemption]:
        """Exclusions and exemptions in force now at these sites."""
        where, params = in_list("site_id", sorted(set(sites)))
        return [triage.Exemption(r["id"], r["kind"], r["site_id"], r["group_name"],
                                 r["rule_id"], r["category"], r["starts_at"], r["expires_at"])
                for r in self.db.rows(
                    "SELECT id, kind, site_id, group_name, rule_id, category, starts_at, "
                    "expires_at FROM exemptions WHERE removed_at IS NULL AND starts_at <= ? "
                    f"AND (expires_at IS NULL OR expires_at > ?) AND {where} ORDER BY id",
                    [now_ms, now_ms, *params])]

    def insert_queue_items(self, items: Sequence[triage.PlannedItem], now_ms: int
                           ) -> list[int]:
        """New queue items (status ``new``), one statement for the batch; their ids."""
        if not items:
            return []
        ids = self.allocate_queue_item_ids(len(items))
        self.db.executemany(
            "INSERT INTO queue_items (id, site_id, device_id, os_user, rule_id, category, "
            "severity, priority, pinned, refer_police, count, first_time_ms, last_time_ms, "
            "latest_capture_id, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(i, it.site_id, *it.key, it.category, it.severity, it.priority, int(it.pinned),
              int(it.refer_police), it.count, it.first_time_ms, it.last_time_ms,
              it.latest_capture_id, now_ms, now_ms) for i, it in zip(ids, items, strict=True)])
        return ids

    def update_queue_items(self, items: Sequence[triage.PlannedItem], now_ms: int) -> None:
        """Merges into existing items: counts, severity, priority, times (one statement)."""
        if not items:
            return
        self.db.executemany(
            "UPDATE queue_items SET count = ?, severity = ?, priority = ?, pinned = ?, "
            f"refer_police = {self.db.greatest('refer_police', '?')}, first_time_ms = ?, "
            "last_time_ms = ?, latest_capture_id = ?, updated_at = ? WHERE id = ?",
            [(it.count, it.severity, it.priority, int(it.pinned), int(it.refer_police),
              it.first_time_ms, it.last_time_ms, it.latest_capture_id, now_ms, it.existing_id)
             for it in items])

    def insert_captures(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Capture rows in :data:`CAPTURE_COLUMNS` order (one statement for the batch)."""
        if rows:
            self.db.executemany(_INSERT_CAPTURE, rows)

    @staticmethod
    def capture_row(c: NewCapture, screenshot_path: str | None, queue_item_id: int | None,
                    exemption_id: int | None) -> tuple[Any, ...]:
        return (c.id, c.device_id, c.site_id, c.os_user, c.hostname, c.time_ms, c.last_time_ms,
                c.count, c.source, c.rule_id, c.category, c.severity, c.match, c.context,
                c.window_title, c.process, c.match_kind, c.media, c.rules_version,
                c.received_at, screenshot_path, queue_item_id, exemption_id, c.reasons, c.score)

    # -- queue items -------------------------------------------------------------------------
    def get_queue_item(self, item_id: int) -> QueueItemRow | None:
        r = self.db.one("SELECT * FROM queue_items WHERE id = ?", (item_id,))
        return _item(r) if r else None

    def set_queue_status(self, item_id: int, status: str, actor: str, now_ms: int) -> None:
        """Change an item's status through the lifecycle, with its action row and audit."""
        with self.db.transaction():
            r = self.db.one("SELECT status, closed_at FROM queue_items WHERE id = ?",
                            (item_id,))
            if r is None:
                raise KeyError(f"no queue item {item_id}")
            change = transition(r["status"], status, now_ms, r["closed_at"])
            self.db.execute("UPDATE queue_items SET status = ?, updated_at = ?, closed_at = ? "
                            "WHERE id = ?", (status, now_ms, change.closed_at, item_id))
            self.db.execute("INSERT INTO queue_actions (queue_item_id, actor, action, at) "
                            "VALUES (?,?,?,?)", (item_id, actor, f"status:{status}", now_ms))
            self.audit(actor, "queue.status", str(item_id), None, {"status": status}, now_ms)
            self.queue_changed([item_id])

    def capture_ids_for_item(self, item_id: int) -> list[str]:
        return [r["id"] for r in self.db.rows(
            "SELECT id FROM captures WHERE queue_item_id = ? ORDER BY time_ms, id", (item_id,))]

    # -- exemptions --------------------------------------------------------------------------
    def add_exemption(self, kind: str, site_id: str, reason: str, created_by: str, now_ms: int,
                      group_name: str | None = None, rule_id: str | None = None,
                      category: str | None = None, starts_at: int | None = None,
                      expires_at: int | None = None) -> int:
        """A written, audited exclusion (standing) or exemption (time-boxed); its id."""
        if kind not in ("exclusion", "exemption"):
            raise ValueError("kind must be 'exclusion' or 'exemption'")
        if not reason.strip():
            raise ValueError("a written reason is required")
        if kind == "exemption" and expires_at is None:
            raise ValueError("an exemption is time-boxed: give it an expiry")
        if rule_id is None and category is None:
            raise ValueError("name a rule or a category to exclude")
        with self.db.transaction():
            eid = int(self.db.scalar(
                "INSERT INTO exemptions (kind, site_id, group_name, rule_id, category, reason, "
                "created_by, created_at, starts_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?) "
                "RETURNING id",
                (kind, site_id, group_name, rule_id, category, reason, created_by, now_ms,
                 starts_at if starts_at is not None else now_ms, expires_at)))
            self.audit(created_by, f"{kind}.add", str(eid), site_id,
                       {"group": group_name, "rule": rule_id, "category": category,
                        "reason": reason, "expires_at": expires_at}, now_ms)
        return eid

    def remove_exemption(self, exemption_id: int, now_ms: int) -> bool:
        return self.db.execute("UPDATE exemptions SET removed_at = ? WHERE id = ? "
                               "AND removed_at IS NULL", (now_ms, exemption_id)) > 0

    # -- alerts ------------------------------------------------------------------------------
    def record_alert(self, queue_item_id: int, contact_index: int, contact: str, channel: str,
                     sent_at: int | None, error: str | None) -> int:
        """One delivery attempt (sent or failed with its error); its id."""
        return int(self.db.scalar(
            "INSERT INTO alerts (queue_item_id, contact_index, contact, channel, sent_at, "
            "error) VALUES (?,?,?,?,?,?) RETURNING id",
            (queue_item_id, contact_index, contact, channel, sent_at, error)))

    def alerts_for_item(self, queue_item_id: int) -> list[AlertRow]:
        return [AlertRow(r["id"], r["queue_item_id"], r["contact_index"], r["contact"],
                         r["channel"], r["sent_at"], r["error"], r["acknowledged_at"])
                for r in self.db.rows("SELECT * FROM alerts WHERE queue_item_id = ? "
                                      "ORDER BY id", (queue_item_id,))]

    def acknowledge_alerts(self, queue_item_id: int, by: str, now_ms: int) -> int:
        """Stop escalation for an item; how many alerts were acknowledged."""
        with self.db.transaction():
            n = self.db.execute(
                "UPDATE alerts SET acknowledged_at = ?, acknowledged_by = ? "
                "WHERE queue_item_id = ? AND acknowledged_at IS NULL",
                (now_ms, by, queue_item_id))
            self.audit(by, "alert.acknowledge", str(queue_item_id), None, {}, now_ms)
        return n

    def unacknowledged_alerted_items(self) -> list[int]:
        """Items that were alerted by email, nobody acknowledged, and are still ``new``."""
        return [r["queue_item_id"] for r in self.db.rows(
            "SELECT a.queue_item_id FROM alerts a JOIN queue_items q ON q.id = a.queue_item_id "
            "WHERE a.channel = 'email' AND q.status = 'new' GROUP BY a.queue_item_id "
            "HAVING COUNT(a.acknowledged_at) = 0 ORDER BY a.queue_item_id")]
