"""Human labels for templates: categories, statuses, actions, times (defined once elsewhere)."""

from __future__ import annotations

from collector.domain.vocabulary import (
    ACTIONS,
    ILLEGAL_CATEGORIES,
    STATUS_LABELS,
    category_label,
    is_illegal,
    known_categories,
)
from collector.services._text import fmt_time, parse_date, show_bidi

__all__ = ["ACTIONS", "ILLEGAL_CATEGORIES", "STATUSES", "category_label", "fmt_time",
           "is_illegal", "known_categories", "parse_date", "show_bidi"]

#: Status id -> label (the vocabulary's, under the name the templates use).
STATUSES: dict[str, str] = STATUS_LABELS
