"""Retention: purge finished cases, stray captures and old audit rows, for good."""

from __future__ import annotations

from pathlib import Path

from collector.domain.vocabulary import CLOSED_STATUSES
from collector.store.base import PurgePolicy, PurgeReport
from collector.store.sql import Db, in_list

__all__ = ["RetentionRepo"]

_DAY = 86_400_000


class RetentionRepo:
    db: Db
    data_dir: Path

    def after_purge(self) -> None:
        """Backend hook after a committed purge (SQLite: checkpoint and truncate the WAL, so
        earlier images of the purged pages are gone from disk too)."""

    def purge(self, now_ms: int, policy: PurgePolicy, dry_run: bool = False) -> PurgeReport:
        """Delete false positives after ``false_positive_days``, other closed items after
        ``closed_days`` (from when they closed), captures that never joined an item after
        ``closed_days``, and audit rows after ``audit_days``; screenshot files go after the
        commit. ``dry_run`` counts and deletes nothing."""
        report = PurgeReport(dry_run=dry_run)
        fp_before = now_ms - policy.false_positive_days * _DAY
        closed_before = now_ms - policy.closed_days * _DAY
        audit_before = now_ms - policy.audit_days * _DAY
        finished = sorted(CLOSED_STATUSES - {"false_positive"})
        st_where, st_params = in_list("status", finished)
        with self.db.transaction():
            items = [r["id"] for r in self.db.rows(
                "SELECT id FROM queue_items WHERE (status = 'false_positive' AND updated_at < ?) "
                f"OR ({st_where} AND COALESCE(closed_at, updated_at) < ?)",
                [fp_before, *st_params, closed_before])]
            caps: list[tuple[str, str | None]] = []
            for i in range(0, len(items), 300):
                where, params = in_list("queue_item_id", items[i: i + 300])
                caps += [(r["id"], r["screenshot_path"]) for r in self.db.rows(
                    f"SELECT id, screenshot_path FROM captures WHERE {where}", params)]
            caps += [(r["id"], r["screenshot_path"]) for r in self.db.rows(
                "SELECT id, screenshot_path FROM captures WHERE queue_item_id IS NULL "
                "AND received_at < ?", (closed_before,))]
            shots = [p for _, p in caps if p]
            report.queue_items, report.captures, report.screenshots = (
                len(items), len(caps), len(shots))
            report.audit_rows = int(self.db.scalar(
                "SELECT COUNT(*) FROM audit WHERE at < ?", (audit_before,)))
            if dry_run:
                return report
            ids = [c for c, _ in caps]
            for i in range(0, len(ids), 300):
                where, params = in_list("id", ids[i: i + 300])
                self.db.execute(f"DELETE FROM captures WHERE {where}", params)
            for i in range(0, len(items), 300):
                chunk = items[i: i + 300]
                where, params = in_list("queue_item_id", chunk)
                for table in ("queue_actions", "alerts"):
                    self.db.execute(f"DELETE FROM {table} WHERE {where}", params)
                where, params = in_list("id", chunk)
                self.db.execute(f"DELETE FROM queue_items WHERE {where}", params)
            if report.audit_rows:
                self.db.execute("INSERT INTO audit_purge_allowed (token) VALUES (1)")
                self.db.execute("DELETE FROM audit WHERE at < ?", (audit_before,))
                self.db.execute("DELETE FROM audit_purge_allowed")
        for rel in shots:
            (self.data_dir / rel).unlink(missing_ok=True)
        self.after_purge()
        return report
