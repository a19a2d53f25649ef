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

    # v2, all optional (docs/rules-language.md): scored by the context layer
    weights = { "how many" = 4, "paracetamol" = 6, "recipe" = -10 }
    combos = [{ all = ["how many", "paracetamol"], weight = 10 }]
    threshold = 8                   # or thresholds = { primary = 6, staff = 10 }
    pronouns = false                # true: "myself" also reads as himself, herself...
    exclusion_scope = "overlap"     # "context": an exclusion anywhere cancels the rule

A phrase ending in ``*`` matches as a word prefix (``unaliv*``). Every problem is reported
with file, line, rule id and the fix; one bad file means nothing loads.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from .model import CATEGORIES, Rule, RuleError
from .ruleset import RuleSet
from .validate import DEFAULT_KEYS, rule_from_dict

__all__ = ["load_library"]


def _header_lines(text: str, pattern: str) -> list[int]:
    return [n for n, ln in enumerate(text.splitlines(), 1) if re.match(pattern, ln)]


def _key_line(text: str, start: int | None, key: str | None) -> int | None:
    """The line of ``key = ...`` inside the rule starting at line ``start``, if any."""
    if start is None or key is None:
        return start
    for n, ln in enumerate(text.splitlines()[start:], start + 1):
        if re.match(rf"\s*\[\[?\s*rule\.{re.escape(key)}\s*]", ln):
            return n  # a sub-table: [rule.weights], [[rule.combos]]
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
        raise RuleError(name, None, None, hint) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise RuleError(
            name, int(m.group(1)) if m else None, None, f"not valid TOML ({e}): fix the syntax"
        ) from None
    extra = sorted(set(doc) - {"category", "defaults", "rule"})
    if extra:
        raise RuleError(
            name,
            None,
            None,
            f"unknown top-level key {extra[0]!r}: a file holds "
            "category, [defaults] and [[rule]] tables",
        )
    cat = doc.get("category")
    if not isinstance(cat, str) or cat not in CATEGORIES:
        raise RuleError(
            name,
            1,
            None,
            f"category = {cat!r} is missing or unknown: use one of {', '.join(CATEGORIES)}",
        )
    defaults = doc.get("defaults", {})
    found = _header_lines(text, r"\s*\[\s*defaults\s*]")
    at_defaults = found[0] if found else None
    if not isinstance(defaults, dict) or set(defaults) - DEFAULT_KEYS:
        raise RuleError(
            name, at_defaults, None, f"[defaults] may only set {', '.join(sorted(DEFAULT_KEYS))}"
        )
    rules_raw = doc.get("rule", [])
    if not isinstance(rules_raw, list) or not rules_raw:
        raise RuleError(name, None, None, "no [[rule]] tables: add at least one rule")
    lines = _header_lines(text, r"\s*\[\[\s*rule\s*]]")
    out = []
    for n, raw in enumerate(rules_raw):
        line = lines[n] if n < len(lines) else None
        if not isinstance(raw, dict):
            raise RuleError(name, line, None, "each rule must be a [[rule]] table of keys")
        if raw.get("category", cat) != cat:
            raise RuleError(
                name,
                _key_line(text, line, "category"),
                raw.get("id"),
                f"category {raw.get('category')!r} differs from the file's category "
                f"{cat!r}: move the rule to its own file",
            )
        inherit = defaults
        if "weights" not in raw and "combos" not in raw:  # a file-wide threshold is for
            inherit = {k: v for k, v in defaults.items()  # the rules that score
                       if k not in ("threshold", "thresholds")}
        try:
            out.append(rule_from_dict({**inherit, "category": cat, **raw}, name, line))
        except RuleError as e:
            key = getattr(e, "key", None)
            # a bad value inherited from [defaults] is reported where it is written
            inherited = key in inherit and key not in raw
            where = at_defaults if inherited else line
            hint = e.hint + (" (set in [defaults])" if inherited else "")
            raise RuleError(name, _key_line(text, where, key), e.rule_id, hint) from None
    return out


def load_library(path: str | Path) -> RuleSet:
    """Load every ``*.toml`` in ``path`` into a :class:`RuleSet`, or raise :class:`RuleError`
    naming every problem (``.errors``). Nothing loads unless everything is valid."""
    root = Path(path)
    if not root.is_dir():
        raise RuleError(
            str(root),
            None,
            None,
            "not a directory: pass the folder holding the rule files (e.g. rules/library)",
        )
    files = sorted(root.glob("*.toml"))
    if not files:
        raise RuleError(str(root), None, None, "no *.toml rule files in this folder")
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
                    RuleError(
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
