"""The collector's words, defined once: queue statuses, the closed set, actions, categories.

Every layer (triage, services, the console, exports, alerts, the CLIs) takes these from here.
The category list belongs to the rules package; this module only adds the labels' one fallback.
"""

from __future__ import annotations

import rules

__all__ = [
    "ACTIONS",
    "CLOSED_STATUSES",
    "FORBIDDEN_AUDIT_DETAIL",
    "ILLEGAL_CATEGORIES",
    "LANGUAGES",
    "LEAD_TITLES",
    "OPEN_STATUSES",
    "STATUSES",
    "STATUS_LABELS",
    "category_label",
    "is_closed",
    "is_illegal",
    "known_categories",
    "lead_title",
    "role_label",
]

#: Queue item statuses in lifecycle order (see collector/domain/lifecycle.py).
STATUSES: tuple[str, ...] = ("new", "in_review", "actioned", "closed", "false_positive")
STATUS_LABELS: dict[str, str] = {
    "new": "New",
    "in_review": "In review",
    "actioned": "Actioned",
    "closed": "Closed",
    "false_positive": "False positive",
}
#: Items that still take merges, alerts and escalation.
OPEN_STATUSES: frozenset[str] = frozenset({"new", "in_review"})
#: Items whose case is finished: they carry ``closed_at`` and age out under retention.
CLOSED_STATUSES: frozenset[str] = frozenset(STATUSES) - OPEN_STATUSES

#: Illegal-imagery categories: never a screenshot, never content without four-eyes,
#: never suppressed by an exemption, always marked refer-to-police.
ILLEGAL_CATEGORIES: frozenset[str] = frozenset(rules.ILLEGAL_CATEGORIES)

#: The response matrix from the seed policies (action id -> label).
ACTIONS: dict[str, str] = {
    "refer_tutor": "Referred to class teacher / tutor",
    "refer_head_of_year": "Referred to head of year / pastoral",
    "refer_headteacher": "Referred to headteacher",
    "refer_police": "Referred to police",
    "refer_technical": "Referred to technical staff (filtering)",
    "inform_parents": "Informed parents / carers",
    "warning": "Warning given",
    "further_sanction": "Further sanction",
}

#: Console languages: code -> the language's own name (as the language switch shows it).
LANGUAGES: dict[str, str] = {"en": "English", "cy": "Cymraeg"}

#: What a school calls its safeguarding lead: (long, short), by whether the site is in Wales.
#: England: Keeping Children Safe in Education's Designated Safeguarding Lead. Wales: the
#: Welsh Government's Keeping Learners Safe (2021, 2022) names the role Designated
#: Safeguarding Person, "person diogelu dynodedig" (its earlier editions: designated senior
#: person); both abbreviate to DSP. The console translates these (i18n_cy.toml).
LEAD_TITLES: dict[bool, tuple[str, str]] = {
    False: ("Designated Safeguarding Lead (DSL)", "DSL"),
    True: ("Designated Safeguarding Person (DSP)", "DSP"),
}
_ROLE_LABELS: dict[str, tuple[str, str]] = {  # role -> (English site, Welsh site)
    "dsl": ("DSL", "DSP"),
    "deputy_dsl": ("Deputy DSL", "Deputy DSP"),
    "technician": ("Technician", "Technician"),
    "governor": ("Governor", "Governor"),
    "trust_admin": ("Trust lead", "Trust lead"),
    "dpo": ("Data protection officer", "Data protection officer"),
}


def lead_title(wales: bool, *, long: bool = False) -> str:
    """The safeguarding lead's title at a site (English text; translate it to show it)."""
    full, short = LEAD_TITLES[bool(wales)]
    return full if long else short


def role_label(role: str, wales: bool) -> str:
    """A console role as its holder is called at a site ('deputy_dsl' -> 'Deputy DSP')."""
    pair = _ROLE_LABELS.get(role)
    return pair[bool(wales)] if pair else role.replace("_", " ").capitalize()


def category_label(category: str) -> str:
    """The library's label; an id it does not know reads as a tidy version of itself."""
    return str(rules.CATEGORIES.get(category) or category.replace("_", " ").capitalize())


def known_categories() -> list[str]:
    """Category ids for filters (from the rules package, not a table scan)."""
    return sorted(set(rules.CATEGORIES) | ILLEGAL_CATEGORIES)


def is_illegal(category: str, refer_police: int | bool = 0) -> bool:
    return bool(refer_police) or category in ILLEGAL_CATEGORIES


def is_closed(status: str) -> bool:
    return status in CLOSED_STATUSES


#: Keys an audit row's detail must never carry: the audit log records who did what, never
#: what a pupil wrote or saw.
FORBIDDEN_AUDIT_DETAIL: frozenset[str] = frozenset(
    {"match", "context", "window_title", "screenshot", "content"})
