"""Load and validate a rule library: a folder of TOML files, one per category.

File format (see rules/library/*.toml)::

    category = "self_harm"          # must match the file name's category

    [defaults]                      # optional; any rule key except id/phrases/exclusions
    severity = 3
    sources = ["keys", "window"]

    [[rule]]
    id = "self_harm.cutting"
    severity = 4
    phrases = ["cut myself", "cutting myself"]
    exclusions = []                 # phrases that cancel a hit they overlap
    groups = ["secondary", "sixth_form"]
    language = "en"                 # "cy" for Welsh
    screenshot = true               # forced false for csam
    on_mount = false                # media only: fire on any removable mount

A phrase ending in ``*`` matches as a word prefix (``unaliv*``). Every problem is reported
with file, line, rule id and the fix; one bad file means nothing loads.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from .model import CATEGORIES, GROUPS, SOURCES, Rule, RuleError
from .normalise import normalise
from .ruleset import RuleSet

__all__ = ["load_library", "rule_from_dict"]

_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,79}$")
_LANG = re.compile(r"^[a-z]{2,3}$")
_RULE_KEYS = {"id", "category", "severity", "phrases", "exclusions", "sources", "groups",
              "language", "screenshot", "on_mount"}  # fmt: skip
_DEFAULT_KEYS = _RULE_KEYS - {"id", "phrases", "exclusions", "category"}


def _err(
    file: str, line: int | None, rid: str | None, hint: str, key: str | None = None
) -> RuleError:
    err = RuleError(file, line, rid, hint)
    err.key = key  # type: ignore[attr-defined]  # lets the file loader point at the key's line
    return err


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
    unknown = sorted(set(d) - _RULE_KEYS)
    if unknown:
        raise _err(
            file,
            line,
            rid,
            key=unknown[0],
            hint=f"unknown key {unknown[0]!r}: allowed keys are {', '.join(sorted(_RULE_KEYS))}",
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
    if cat not in CATEGORIES:
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
    if not phrases and not flags["on_mount"]:
        raise _err(
            file,
            line,
            rid,
            key="phrases",
            hint='no phrases: add phrases = ["..."] (only on_mount rules may have none)',
        )
    for key, vals in (("phrases", phrases), ("exclusions", exclusions)):
        seen: set[str] = set()
        for p in vals:
            core = normalise(p[:-1] if p.endswith("*") else p)
            if len(core.replace(" ", "")) < 2:
                raise _err(
                    file,
                    line,
                    rid,
                    key=key,
                    hint=f"{key[:-1]} {p!r} has fewer than 2 letters after "
                    "normalising: make it longer",
                )
            if (core, p.endswith("*")) in seen:
                raise _err(
                    file,
                    line,
                    rid,
                    key=key,
                    hint=f"{key[:-1]} {p!r} duplicates another one after "
                    "normalising (case, leetspeak, repeated letters): remove it",
                )
            seen.add((core, p.endswith("*")))
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
    )


def _rule_lines(text: str) -> list[int]:
    return [n for n, ln in enumerate(text.splitlines(), 1) if re.match(r"\s*\[\[\s*rule\s*]]", ln)]


def _key_line(text: str, start: int | None, key: str | None) -> int | None:
    """The line of ``key = ...`` inside the rule starting at line ``start``, if any."""
    if start is None or key is None:
        return start
    for n, ln in enumerate(text.splitlines()[start:], start + 1):
        if re.match(r"\s*\[", ln):
            break
        if re.match(rf"\s*{re.escape(key)}\s*=", ln):
            return n
    return start


def _load_file(path: Path) -> list[Rule]:
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        hint = f"cannot read the file ({e}): check it exists and is UTF-8"
        raise _err(name, None, None, hint) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise _err(
            name, int(m.group(1)) if m else None, None, f"not valid TOML ({e}): fix the syntax"
        ) from None
    extra = sorted(set(doc) - {"category", "defaults", "rule"})
    if extra:
        raise _err(
            name,
            None,
            None,
            f"unknown top-level key {extra[0]!r}: a file holds "
            "category, [defaults] and [[rule]] tables",
        )
    cat = doc.get("category")
    if cat not in CATEGORIES:
        raise _err(
            name,
            1,
            None,
            f"category = {cat!r} is missing or unknown: use one of {', '.join(CATEGORIES)}",
        )
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict) or set(defaults) - _DEFAULT_KEYS:
        raise _err(name, None, None, f"[defaults] may only set {', '.join(sorted(_DEFAULT_KEYS))}")
    rules_raw = doc.get("rule", [])
    if not isinstance(rules_raw, list) or not rules_raw:
        raise _err(name, None, None, "no [[rule]] tables: add at least one rule")
    lines = _rule_lines(text)
    out = []
    for n, raw in enumerate(rules_raw):
        line = lines[n] if n < len(lines) else None
        if raw.get("category", cat) != cat:
            raise _err(
                name,
                _key_line(text, line, "category"),
                raw.get("id"),
                f"category {raw.get('category')!r} differs from the file's category "
                f"{cat!r}: move the rule to its own file",
            )
        try:
            out.append(rule_from_dict({**defaults, "category": cat, **raw}, name, line))
        except RuleError as e:
            key = getattr(e, "key", None)
            raise RuleError(name, _key_line(text, line, key), e.rule_id, e.hint) from None
    return out


def load_library(path: str | Path) -> RuleSet:
    """Load every ``*.toml`` in ``path`` into a :class:`RuleSet`, or raise :class:`RuleError`
    naming every problem (``.errors``). Nothing loads unless everything is valid."""
    root = Path(path)
    if not root.is_dir():
        raise _err(
            str(root),
            None,
            None,
            "not a directory: pass the folder holding the rule files (e.g. rules/library)",
        )
    files = sorted(root.glob("*.toml"))
    if not files:
        raise _err(str(root), None, None, "no *.toml rule files in this folder")
    errors: list[RuleError] = []
    rules: list[Rule] = []
    where: dict[str, str] = {}
    for f in files:
        try:
            loaded = _load_file(f)
        except RuleError as e:
            errors.append(e)
            continue
        for r in loaded:
            if r.id in where:
                errors.append(
                    _err(
                        str(f),
                        None,
                        r.id,
                        f"id already used in {where[r.id]}: give this rule a unique id",
                    )
                )
            where[r.id] = str(f)
            rules.append(r)
    if errors:
        first = errors[0]
        raise RuleError(first.file, first.line, first.rule_id, first.hint, tuple(errors))
    return RuleSet(tuple(rules))
