"""Audit: the one writer of the append-only ``audit`` table, for every caller.

``detail`` is JSON and must never carry capture content (matches, context, titles, images);
:meth:`AuditRepo.audit` refuses it, whoever asks (the console, a CLI, the gRPC server).
"""

from __future__ import annotations

import json
import time
from typing import Any

from collector.domain.vocabulary import FORBIDDEN_AUDIT_DETAIL
from collector.store.sql import Db

__all__ = ["AuditRepo"]


class AuditRepo:
    db: Db

    def audit(self, actor: str, action: str, target: str = "", site_id: str | None = None,
              detail: dict[str, Any] | None = None, now_ms: int | None = None) -> None:
        """Append one audit row (inside the caller's transaction when there is one).

        Raises ValueError when ``detail`` names a capture-content key."""
        detail = detail or {}
        bad = FORBIDDEN_AUDIT_DETAIL & detail.keys()
        if bad:
            raise ValueError(f"audit detail must not carry capture content: {sorted(bad)}")
        self.db.execute(
            "INSERT INTO audit (at, actor, action, target, site_id, detail) VALUES (?,?,?,?,?,?)",
            (now_ms if now_ms is not None else int(time.time() * 1000), actor, action, target,
             site_id, json.dumps(detail, sort_keys=True)))

    def audit_rows(self, action: str | None = None) -> list[dict[str, Any]]:
        """Every audit row (or those of one action), oldest first."""
        if action is None:
            return self.db.rows("SELECT * FROM audit ORDER BY id")
        return self.db.rows("SELECT * FROM audit WHERE action = ? ORDER BY id", (action,))
