"""Ingest: one batch of validated captures (plus heartbeats and rules acks) into the store.

The orchestration lives here once, for every backend:

1. screenshots are encrypted to staged files (outside the transaction: slow work);
2. the scorer seam may raise severities (never lowers one, never drops a capture);
3. in ONE transaction, set-wise: device health, rules acks, which ids are already stored,
   the newest queue item per (device, user, rule), each pupil's last 24 h, the exemptions in
   force; one triage pass over the whole batch (collector.domain.triage.plan); then new
   queue items, merged items and the capture rows, each as one statement;
4. after the commit, staged screenshots are renamed into place (a rollback deletes them).

The caller (collector/store/ingest.py's Writer) acknowledges captures only after this returns.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

from collector.domain import triage
from collector.domain.scoring import AgentScores, Scorer
from collector.domain.vocabulary import ILLEGAL_CATEGORIES
from collector.store.base import (
    Heartbeat,
    IngestResult,
    NewCapture,
    QueueItemRow,
    RulesAckRow,
    Store,
)
from collector.store.screenshots import StagedScreenshots, ensure_key

__all__ = ["IngestService", "ingest"]


class IngestService:
    """Stateless apart from the screenshot key it reads once; safe to call from one writer
    thread (the store serialises its own connection)."""

    def __init__(self, store: Store, policy: triage.TriagePolicy,
                 scorer: Scorer | None = None) -> None:
        self.store = store
        self.policy = policy
        self.scorer: Scorer = scorer or AgentScores()
        self._key: bytes | None = None
        self._key_lock = threading.Lock()

    def _screenshot_key(self) -> bytes:
        with self._key_lock:
            if self._key is None:
                self._key = ensure_key(Path(self.store.data_dir))
            return self._key

    def ingest(self, captures: Sequence[NewCapture], now_ms: int,
               heartbeats: Sequence[Heartbeat] = (),
               rules_acks: Sequence[RulesAckRow] = ()) -> IngestResult:
        """Store the new captures, triage them, apply health and acks: all or nothing."""
        result = IngestResult()
        unique: dict[str, NewCapture] = {}
        for c in captures:
            first = unique.setdefault(c.id, c)
            if first.device_id != c.device_id:
                result.conflicts.add((c.id, c.device_id))
        self._rescore(list(unique.values()))
        staged: StagedScreenshots | None = None
        shots: dict[str, str] = {}
        for c in unique.values():
            if c.screenshot and c.category not in ILLEGAL_CATEGORIES:
                if staged is None:
                    staged = StagedScreenshots(Path(self.store.data_dir),
                                               self._screenshot_key())
                shots[c.id] = staged.stage(c.id, c.screenshot)
        try:
            with self.store.transaction():
                self.store.apply_heartbeats(heartbeats)
                self.store.apply_rules_acks(rules_acks)
                if unique:
                    self._captures(unique, shots, now_ms, result)
        except BaseException:
            if staged is not None:
                staged.discard()
            raise
        if staged is not None:
            staged.publish(set(result.stored_ids))
        return result

    def _rescore(self, captures: list[NewCapture]) -> None:
        by_id = {c.id: c for c in captures}
        for r in self.scorer.rescore(captures):
            c = by_id.get(r.capture_id)
            if c is None or r.severity <= c.severity:
                continue  # a scorer may only raise a severity
            c.severity = min(5, r.severity)
            if r.score is not None:
                c.score = r.score
            reasons = json.loads(c.reasons or "[]")
            c.reasons = json.dumps([*reasons, r.reason[:200]][:16])

    def _captures(self, unique: dict[str, NewCapture], shots: dict[str, str], now_ms: int,
                  result: IngestResult) -> None:
        store = self.store
        owner = store.capture_owners(list(unique))
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
        open_items = store.latest_items(f.key for f in facts)
        since = min(f.time_ms for f in facts) - triage.DAY_MS
        history = store.user_history(((f.site_id, f.os_user) for f in facts), since)
        exemptions = store.active_exemptions({f.site_id for f in facts}, now_ms)
        plan = triage.plan(facts, open_items, history, exemptions, now_ms, self.policy)

        created = [it for it in plan.items if it.existing_id is None]
        merged = [it for it in plan.items if it.existing_id is not None]
        new_ids = store.insert_queue_items(created, now_ms)
        store.update_queue_items(merged, now_ms)
        item_of: dict[str, int] = {}
        ids = iter(new_ids)
        for it in plan.items:
            item_id = next(ids) if it.existing_id is None else it.existing_id
            status = "new" if it.existing_id is None else open_items[it.key].status
            for cid in it.capture_ids:
                item_of[cid] = item_id
            dev, user, rule = it.key
            result.items.append(QueueItemRow(
                item_id, it.site_id, dev, user, rule, it.category, it.severity, it.priority,
                it.pinned, it.refer_police, status, it.count, it.first_time_ms,
                it.last_time_ms, created=it.existing_id is None))
        store.insert_captures([
            store.capture_row(c, shots.get(c.id), item_of.get(c.id), plan.exempted.get(c.id))
            for c in new])
        store.queue_changed([r.id for r in result.items])


def ingest(store: Store, captures: Sequence[NewCapture], now_ms: int,
           policy: triage.TriagePolicy, heartbeats: Sequence[Heartbeat] = (),
           rules_acks: Sequence[RulesAckRow] = ()) -> IngestResult:
    """One batch through a throwaway :class:`IngestService` (tests, CLIs, benchmarks)."""
    return IngestService(store, policy).ingest(captures, now_ms, heartbeats, rules_acks)
