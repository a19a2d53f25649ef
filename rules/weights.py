"""Validate a rule's v2 scoring fields: weights, combos, thresholds, pronouns, exclusion scope.

All of them are optional, so a v1 rule (phrases and exclusions only) is unchanged::

    weights = { "how many" = 4, "paracetamol" = 6, "recipe" = -10 }   # or [["how many", 4]]
    combos = [{ all = ["how many", "paracetamol"], weight = 10 }]
    threshold = 8                                  # score needed to fire
    thresholds = { primary = 6, staff = 10 }       # per group; others use threshold
    pronouns = true                                # "myself" also reads as himself, herself...
    exclusion_scope = "context"                    # an exclusion anywhere cancels the rule

Every bad value raises a :class:`~rules.model.RuleError` naming the key and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .checks import check_terms, err
from .model import EXCLUSION_SCOPES, GROUPS, Combo, RuleError
from .normalise import normalise

__all__ = ["MAX_THRESHOLD", "MAX_WEIGHT", "V2_KEYS", "ScoringFields", "scoring_fields"]

V2_KEYS = frozenset({"weights", "combos", "threshold", "thresholds", "pronouns",
                     "exclusion_scope"})  # fmt: skip
MAX_WEIGHT = 100
MAX_THRESHOLD = 1000
_PRONOUNS: dict[object, str] = {False: "", True: "third", "third": "third", "all": "all",
                                "": ""}  # fmt: skip


@dataclass(frozen=True)
class ScoringFields:
    """The validated v2 fields, ready for :class:`~rules.model.Rule`."""

    weights: tuple[tuple[str, int], ...] = ()
    combos: tuple[Combo, ...] = ()
    threshold: int | None = None
    thresholds: tuple[tuple[str, int], ...] = ()
    pronouns: str = ""
    exclusion_scope: str = "overlap"


class _Ctx:
    """Where a problem is: builds errors naming file, line, rule id and key."""

    def __init__(self, file: str, line: int | None, rid: str | None) -> None:
        self.file, self.line, self.rid = file, line, rid

    def fail(self, key: str, hint: str) -> RuleError:
        return err(self.file, self.line, self.rid, key=key, hint=hint)


def _weight(v: Any, what: str, key: str, at: _Ctx) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not -MAX_WEIGHT <= v <= MAX_WEIGHT:
        raise at.fail(key, f"weight of {what} is {v!r}: use a whole number from "
                      f"-{MAX_WEIGHT} to {MAX_WEIGHT} (negative = benign context)")
    if v == 0:
        raise at.fail(key, f"weight of {what} is 0, which does nothing: give it a weight "
                      "or remove it")
    return v


def _weights(raw: Any, at: _Ctx) -> tuple[tuple[str, int], ...]:
    example = ('weights must be a table of "phrase" = weight, e.g. weights = { "how many" = 4, '
               'recipe = -10 }, or a list of ["phrase", weight] pairs')
    if isinstance(raw, dict):
        pairs = list(raw.items())
    elif isinstance(raw, list) and all(isinstance(x, list) and len(x) == 2 for x in raw):
        pairs = [(x[0], x[1]) for x in raw]
    else:
        raise at.fail("weights", example)
    out = []
    for phrase, w in pairs:
        if not isinstance(phrase, str):
            raise at.fail("weights", example)
        out.append((phrase, _weight(w, repr(phrase), "weights", at)))
    return tuple(out)


def _combos(raw: Any, at: _Ctx) -> tuple[Combo, ...]:
    example = 'e.g. combos = [{ all = ["how many", "paracetamol"], weight = 10 }]'
    if not isinstance(raw, list) or not all(isinstance(c, dict) for c in raw):
        raise at.fail("combos", f"combos must be a list of tables, {example}")
    out: list[Combo] = []
    seen: set[frozenset[str]] = set()
    for n, c in enumerate(raw, 1):
        extra = sorted(set(c) - {"all", "weight"})
        if extra:
            raise at.fail("combos", f"combo {n} has unknown key {extra[0]!r}: a combo holds "
                          f"only all and weight, {example}")
        parts = c.get("all")
        if (not isinstance(parts, list) or len(parts) < 2
                or not all(isinstance(p, str) for p in parts)):
            raise at.fail("combos", f"combo {n}: 'all' must list at least 2 phrases (for one "
                          f"phrase use weights), {example}")
        check_terms("combos", tuple(parts), at.file, at.line, at.rid)
        ident = frozenset(normalise(p) for p in parts)
        if ident in seen:
            raise at.fail("combos", f"combo {n} has the same parts as an earlier combo: "
                          "merge them into one")
        seen.add(ident)
        if "weight" not in c:
            raise at.fail("combos", f"combo {n} has no weight: add weight = N, {example}")
        out.append(Combo(tuple(parts), _weight(c["weight"], f"combo {n}", "combos", at)))
    return tuple(out)


def _threshold(v: Any, what: str, key: str, at: _Ctx) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_THRESHOLD:
        raise at.fail(key, f"{what} {v!r} must be a whole number from 1 to {MAX_THRESHOLD} "
                      "(the score a context needs for the rule to fire)")
    return v


def _thresholds(raw: Any, at: _Ctx) -> tuple[tuple[str, int], ...]:
    if not isinstance(raw, dict):
        raise at.fail("thresholds", "thresholds must be a table of group = score, e.g. "
                      "thresholds = { primary = 6, secondary = 8 }")
    bad = sorted(set(raw) - set(GROUPS))
    if bad:
        raise at.fail("thresholds", f"thresholds names unknown group {bad[0]!r}: use "
                      f"{', '.join(GROUPS)}")
    return tuple((g, _threshold(raw[g], f"threshold for {g}", "thresholds", at))
                 for g in GROUPS if g in raw)


def scoring_fields(
    d: dict[str, Any], phrases: tuple[str, ...], groups: frozenset[str], file: str,
    line: int | None, rid: str | None,
) -> ScoringFields:
    """Validate the v2 keys of one rule dict (the rest is already checked)."""
    at = _Ctx(file, line, rid)
    weights = _weights(d["weights"], at) if "weights" in d else ()
    combos = _combos(d["combos"], at) if "combos" in d else ()
    seen: set[tuple[str, bool]] = set()
    check_terms("phrases", phrases, file, line, rid, seen)
    alone = set(seen)
    try:
        check_terms("weights", tuple(p for p, _ in weights), file, line, rid, seen)
    except RuleError as e:
        dup = next((p for p, _ in weights if (normalise(p.rstrip("*"), collapse=False),
                                              p.endswith("*")) in alone), None)
        if dup is None:
            raise
        raise at.fail("weights", f"{dup!r} is both a phrase (fires alone) and a weight: keep "
                      "one of them") from e
    threshold = _threshold(d["threshold"], "threshold", "threshold", at) \
        if "threshold" in d else None
    thresholds = _thresholds(d["thresholds"], at) if "thresholds" in d else ()
    scored = bool(weights or combos)
    if not scored and (threshold is not None or thresholds):
        key = "threshold" if threshold is not None else "thresholds"
        raise at.fail(key, f"{key} without weights or combos does nothing: add weights, or "
                      f"remove {key}")
    if scored:
        missing = [g for g in GROUPS if g in groups and g not in dict(thresholds)]
        if threshold is None and missing:
            raise at.fail("thresholds" if thresholds else "weights",
                          f"no threshold for {', '.join(missing)}: add threshold = N (the "
                          "score a context needs to fire the rule)")
        best = (sum(w for _, w in weights if w > 0) + sum(c.weight for c in combos
                                                          if c.weight > 0))
        need = min(t for t in [threshold, *dict(thresholds).values()] if t is not None)
        if best < need:
            key = "threshold" if threshold == need else "thresholds"
            raise at.fail(key, f"threshold {need} can never be reached: the positive weights "
                          f"and combos add up to {best}; lower it or add weights")
    pronouns = d.get("pronouns", False)
    if not isinstance(pronouns, bool | str) or pronouns not in _PRONOUNS:
        raise at.fail("pronouns", f"pronouns {pronouns!r} must be true (a phrase with "
                      "'myself' also reads as himself, herself, themself, themselves), "
                      '"all" (also yourself) or false')
    mode = _PRONOUNS[pronouns]
    terms = [*phrases, *(p for p, _ in weights), *(p for c in combos for p in c.parts)]
    if mode and not any("myself" in normalise(t).split() for t in terms):
        raise at.fail("pronouns", "pronouns does nothing here: no phrase of this rule "
                      "contains 'myself'; remove it")
    scope = d.get("exclusion_scope", "overlap")
    if scope not in EXCLUSION_SCOPES:
        raise at.fail("exclusion_scope", f"exclusion_scope {scope!r} must be \"overlap\" (an "
                      "exclusion cancels the phrase it overlaps) or \"context\" (an exclusion "
                      "anywhere in the context cancels the rule)")
    return ScoringFields(weights=weights, combos=combos, threshold=threshold,
                         thresholds=thresholds, pronouns=mode, exclusion_scope=scope)
