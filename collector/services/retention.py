"""Retention: purge old false positives, closed items and (much later) audit rows.

Defaults (``[retention]``): false positives after 30 days, closed/actioned items after 365 days,
audit rows after 7 years. Screenshot files of purged captures are deleted. Every real purge
is itself written to the audit log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from collector.config import RetentionConfig
from collector.store.base import PurgePolicy, PurgeReport, Store

__all__ = ["policy_from", "purge", "run_scheduled"]

log = logging.getLogger(__name__)


def policy_from(cfg: RetentionConfig) -> PurgePolicy:
    return PurgePolicy(cfg.false_positive_days, cfg.closed_days, cfg.audit_days)


def purge(store: Store, policy: PurgePolicy, actor: str, now_ms: int | None = None,
          dry_run: bool = False) -> PurgeReport:
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    report = store.purge(now_ms, policy, dry_run=dry_run)
    store.audit(actor, "retention.purge" + (".dry_run" if dry_run else ""), "", None,
                {**report.as_dict(), "false_positive_days": policy.false_positive_days,
                 "closed_days": policy.closed_days, "audit_days": policy.audit_days}, now_ms)
    return report


async def run_scheduled(store: Store, run: Callable[..., Awaitable[Any]],
                        cfg: RetentionConfig) -> None:
    """Purge (and maintain the store: next months' partitions on PostgreSQL) once at
    start-up, then every ``purge_interval_hours``, in the one collector process that leads
    the ``retention`` job."""
    while True:
        try:
            if await run(store.is_leader, "retention"):
                await run(store.maintain)
                report = await run(purge, store, policy_from(cfg), "system")
                log.info("scheduled purge: %s", report.as_dict())
            else:
                log.debug("scheduled purge: another collector leads it")
        except Exception:
            log.exception("scheduled purge failed; will retry next interval")
        await asyncio.sleep(cfg.purge_interval_hours * 3600)
