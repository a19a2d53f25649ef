"""The queue item's status lifecycle: which changes are allowed and what they stamp.

``new`` -> ``in_review`` -> ``actioned`` | ``closed`` | ``false_positive``; a closed item can be
reopened to ``in_review``. Entering a closed status stamps ``closed_at`` (retention counts from
it); leaving one clears it. Both the console and the store's callers go through
:func:`transition`, so "closed" means one thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.domain.vocabulary import CLOSED_STATUSES, STATUSES

__all__ = ["StatusChange", "transition"]


@dataclass(frozen=True)
class StatusChange:
    old: str
    new: str
    closed_at: int | None  # the value to store: now when closing, None when open

    @property
    def changed(self) -> bool:
        return self.old != self.new


def transition(old: str, new: str, now_ms: int, closed_at: int | None = None) -> StatusChange:
    """Validate ``old -> new``; raise ValueError naming the allowed statuses otherwise."""
    if new not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {new!r}")
    if new == "new" and old != "new":
        raise ValueError("an item that has been looked at cannot go back to 'new'; "
                         "reopen it as 'in_review'")
    if new in CLOSED_STATUSES:
        stamp = closed_at if (old in CLOSED_STATUSES and closed_at is not None) else now_ms
        return StatusChange(old, new, stamp)
    return StatusChange(old, new, None)
