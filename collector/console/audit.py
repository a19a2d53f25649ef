"""Append-only audit rows written by the console and its CLI commands.

``detail`` is JSON and must never carry capture content (matches, context, titles, images).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

__all__ = ["FORBIDDEN_DETAIL_KEYS", "audit"]

FORBIDDEN_DETAIL_KEYS = frozenset({"match", "context", "window_title", "screenshot", "content"})


def audit(conn: sqlite3.Connection, at_ms: int, actor: str, action: str, target: str = "",
          site_id: str | None = None, detail: dict[str, Any] | None = None) -> None:
    """Write one audit row (its own statement; autocommit unless inside a transaction)."""
    detail = detail or {}
    bad = FORBIDDEN_DETAIL_KEYS & detail.keys()
    if bad:
        raise ValueError(f"audit detail must not carry capture content: {sorted(bad)}")
    conn.execute(
        "INSERT INTO audit (at, actor, action, target, site_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (at_ms, actor, action, target, site_id, json.dumps(detail, sort_keys=True)),
    )
