"""The console's one audit writer: every view, export, change and refusal the console or its
CLI commands make is recorded here, through the store's append-only ``audit()``.

The detail is JSON and never carries capture content (matches, context, titles, images): the
check lives in the vocabulary (``FORBIDDEN_AUDIT_DETAIL``) and is made both here, before the
store is asked, and by the store's own writer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from collector.domain.vocabulary import FORBIDDEN_AUDIT_DETAIL

__all__ = ["AuditLog", "AuditWriter", "check_detail"]


class AuditWriter(Protocol):
    def audit(self, actor: str, action: str, target: str = "", site_id: str | None = None,
              detail: dict[str, Any] | None = None, now_ms: int | None = None) -> None: ...


def check_detail(detail: dict[str, Any]) -> None:
    """Raise ValueError when an audit detail names a capture-content key."""
    bad = FORBIDDEN_AUDIT_DETAIL & detail.keys()
    if bad:
        raise ValueError(f"audit detail must not carry capture content: {sorted(bad)}")


class AuditLog:
    """Writes audit rows for one store; ``clock`` returns seconds since the epoch."""

    def __init__(self, store: AuditWriter, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    def record(self, actor: str, action: str, target: str = "", site_id: str | None = None,
               *, now_ms: int | None = None, **detail: Any) -> None:
        """Append one row: who (``actor``), did what (``action``), to what, at which site."""
        check_detail(detail)
        at = now_ms if now_ms is not None else int(self.clock() * 1000)
        self.store.audit(actor, action, target, site_id, detail, at)
