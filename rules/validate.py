"""Validate one rule's fields (from a TOML file or a bundle) into a :class:`Rule`."""

from __future__ import annotations

import re
from typing import Any

from .checks import check_terms
from .checks import err as _err
from .model import CATEGORIES, GROUPS, SOURCES, Rule
from .weights import V2_KEYS, scoring_fields

__all__ = ["DEFAULT_KEYS", "RULE_KEYS", "rule_from_dict"]

_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,79}$")
_LANG = re.compile(r"^[a-z]{2,3}$")
RULE_KEYS = {"id", "category", "severity", "phrases", "exclusions", "sources", "groups",
              "language", "screenshot", "on_mount", *V2_KEYS}  # fmt: skip
# weights, combos and pronouns say what one rule means, so [defaults] cannot set them
DEFAULT_KEYS = RULE_KEYS - {"id", "phrases", "exclusions", "category", "weights", "combos",
                            "pronouns"}  # fmt: skip


def _strings(v: Any, key: str, file: str, line: int | None, rid: str | None) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _err(
            file,
            line,
            rid,
            key=key,
            hint=f'{key!r} must be a list of strings, e.g. {key} = ["..."]',
        )
    return tuple(v)


def rule_from_dict(d: dict[str, Any], file: str = "<bundle>", line: int | None = None) -> Rule:
    """Validate one rule's fields and build a :class:`Rule` (raises :class:`RuleError`)."""
    rid = d.get("id") if isinstance(d.get("id"), str) else None
    unknown = sorted(set(d) - RULE_KEYS)
    if unknown:
        raise _err(
            file,
            line,
            rid,
            key=unknown[0],
            hint=f"unknown key {unknown[0]!r}: allowed keys are {', '.join(sorted(RULE_KEYS))}",
        )
    if rid is None or not _ID.match(rid):
        raise _err(
            file,
            line,
            rid,
            key="id",
            hint="'id' must be 2-80 characters of a-z, 0-9, '_', '.', '-' "
            '(e.g. id = "self_harm.cutting")',
        )
    cat = d.get("category")
    if not isinstance(cat, str) or cat not in CATEGORIES:
        raise _err(
            file,
            line,
            rid,
            key="category",
            hint=f"category {cat!r} is unknown: use one of {', '.join(CATEGORIES)}",
        )
    sev = d.get("severity")
    if not isinstance(sev, int) or isinstance(sev, bool) or not 1 <= sev <= 5:
        raise _err(
            file,
            line,
            rid,
            key="severity",
            hint=f"severity {sev!r} must be a whole number from 1 to 5 (5 = imminent risk to life)",
        )
    phrases = _strings(d.get("phrases", []), "phrases", file, line, rid)
    exclusions = _strings(d.get("exclusions", []), "exclusions", file, line, rid)
    sources = _strings(d.get("sources", list(SOURCES)), "sources", file, line, rid)
    groups = _strings(d.get("groups", list(GROUPS)), "groups", file, line, rid)
    for key, vals, allowed in (("sources", sources, SOURCES), ("groups", groups, GROUPS)):
        bad = [v for v in vals if v not in allowed]
        if bad or not vals:
            raise _err(
                file,
                line,
                rid,
                key=key,
                hint=f"{key} {list(vals)!r} invalid: use a non-empty list "
                f"from {', '.join(allowed)}",
            )
    lang = d.get("language", "en")
    if not isinstance(lang, str) or not _LANG.match(lang):
        raise _err(
            file,
            line,
            rid,
            key="language",
            hint=f'language {lang!r} must be an ISO 639 code like "en" or "cy"',
        )
    flags = {}
    for key, default in (("screenshot", True), ("on_mount", False)):
        flags[key] = d.get(key, default)
        if not isinstance(flags[key], bool):
            raise _err(file, line, rid, key=key, hint=f"{key} must be true or false")
    if flags["on_mount"] and "media" not in sources:
        raise _err(file, line, rid, key="on_mount", hint='on_mount = true needs "media" in sources')
    if not phrases and not flags["on_mount"] and not d.get("weights") and not d.get("combos"):
        raise _err(
            file,
            line,
            rid,
            key="phrases",
            hint='no phrases: add phrases = ["..."], or weights and a threshold '
            "(only on_mount rules may have neither)",
        )
    check_terms("phrases", phrases, file, line, rid)
    check_terms("exclusions", exclusions, file, line, rid)
    v2 = scoring_fields(d, phrases, frozenset(groups), file, line, rid)
    return Rule(
        id=rid,
        category=cat,
        severity=sev,
        phrases=phrases,
        exclusions=exclusions,
        sources=frozenset(sources),
        groups=frozenset(groups),
        language=lang,
        screenshot=flags["screenshot"],
        on_mount=flags["on_mount"],
        weights=v2.weights,
        combos=v2.combos,
        threshold=v2.threshold,
        thresholds=v2.thresholds,
        pronouns=v2.pronouns,
        exclusion_scope=v2.exclusion_scope,
    )
