"""A compiled, immutable rule set. Swap rule sets by replacing one reference."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .automaton import CompactAutomaton
from .context import ContextIndex
from .matcher import StreamMatcher
from .model import GROUPS, SOURCES, Hit, Rule
from .normalise import phrase_key

__all__ = ["RuleSet", "phrase_key", "rule_to_dict"]


def rule_to_dict(rule: Rule) -> dict[str, Any]:
    """The canonical, JSON-ready form of a rule (used for hashing and bundles). v2 keys
    appear only when set, so a v1 rule keeps its content hash."""
    out: dict[str, Any] = {
        "id": rule.id,
        "category": rule.category,
        "severity": rule.severity,
        "phrases": list(rule.phrases),
        "exclusions": list(rule.exclusions),
        "sources": sorted(rule.sources),
        "groups": sorted(rule.groups),
        "language": rule.language,
        "screenshot": rule.screenshot,
        "on_mount": rule.on_mount,
    }
    if rule.weights:
        out["weights"] = [[p, w] for p, w in rule.weights]
    if rule.combos:
        out["combos"] = [{"all": list(c.parts), "weight": c.weight} for c in rule.combos]
    if rule.threshold is not None:
        out["threshold"] = rule.threshold
    if rule.thresholds:
        out["thresholds"] = dict(rule.thresholds)
    if rule.pronouns:
        out["pronouns"] = rule.pronouns
    if rule.exclusion_scope != "overlap":
        out["exclusion_scope"] = rule.exclusion_scope
    return out


@dataclass(frozen=True)
class _Index:
    """Everything a matcher needs: automaton plus per-key entries."""

    rules: tuple[Rule, ...]
    automaton: CompactAutomaton
    key_lengths: tuple[int, ...]
    # per key: (is_exclusion, rule index, original phrase, whole word)
    entries: tuple[tuple[tuple[bool, int, str, bool], ...], ...]
    max_exclusion: tuple[int, ...]  # per rule: longest exclusion key (0 = no exclusions)


def _build(rules: tuple[Rule, ...]) -> _Index:
    keys: dict[str, list[tuple[bool, int, str, bool]]] = {}
    max_excl = [0] * len(rules)
    for ri, rule in enumerate(rules):
        for phrase in rule.phrases:
            key = phrase_key(phrase)
            keys.setdefault(key, []).append((False, ri, phrase, key.endswith(" ")))
        for excl in rule.exclusions:
            key = phrase_key(excl)
            keys.setdefault(key, []).append((True, ri, excl, key.endswith(" ")))
            max_excl[ri] = max(max_excl[ri], len(key))
    ordered = list(keys)
    return _Index(
        rules=rules,
        automaton=CompactAutomaton(ordered),
        key_lengths=tuple(len(k) for k in ordered),
        entries=tuple(tuple(keys[k]) for k in ordered),
        max_exclusion=tuple(max_excl),
    )


@dataclass(frozen=True)
class RuleSet:
    """An immutable set of rules with its content hash; builds its automaton on first use."""

    rules: tuple[Rule, ...]
    content_hash: str = field(init=False)

    def __post_init__(self) -> None:
        canon = [rule_to_dict(r) for r in sorted(self.rules, key=lambda r: r.id)]
        blob = json.dumps(canon, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        object.__setattr__(self, "content_hash", hashlib.sha256(blob.encode()).hexdigest())

    @cached_property
    def _index(self) -> _Index:
        return _build(self.rules)

    def matcher(
        self, source: str = "keys", group: str | None = None, context_chars: int = 120
    ) -> StreamMatcher:
        """A new streaming matcher over the rules that watch ``source`` for ``group``."""
        _check(source, group)
        allowed = tuple(r.applies(source, group) for r in self.rules)
        return StreamMatcher(self._index, allowed, context_chars)

    def mount_rules(self, group: str | None = None) -> tuple[Rule, ...]:
        """Media rules that fire on any removable mount (``on_mount = true``)."""
        _check("media", group)
        return tuple(r for r in self.rules if r.on_mount and r.applies("media", group))

    def scan(self, text: str, source: str = "keys", group: str | None = None) -> list[Hit]:
        """Match ``text`` as one context (as if typed, then Enter)."""
        return self.matcher(source, group).scan(text)

    @cached_property
    def _context(self) -> ContextIndex:
        return ContextIndex(self.rules)

    def evaluate(self, text: str, source: str = "keys", group: str | None = None, *,
                 context_chars: int = 120) -> list[Hit]:
        """The context layer: score ``text`` as one whole context (at a boundary: Enter,
        sentence end, idle) against every rule that watches ``source`` for ``group``:
        phrases alone, weighted terms and combos against the rule's threshold, through
        obfuscations the streaming normaliser does not undo (rules/context.py). At most one
        hit per rule, each with ``reasons`` (and ``score`` for scoring rules); ``match_kind``
        is "normalised". Pure and thread-safe."""
        _check(source, group)
        if context_chars < 1:
            raise ValueError("context_chars must be at least 1")
        allowed = tuple(r.applies(source, group) for r in self.rules)
        return self._context.evaluate(text, allowed, group, context_chars)

    def compiled(self, *, context: bool = False) -> RuleSet:
        """Build the streaming automaton now (otherwise the first ``matcher()`` builds it);
        with ``context=True`` also the context layer's index and word list (otherwise the
        first ``evaluate()`` builds them, ~0.2 s for the shipped library)."""
        _ = self._index
        if context:
            _ = self._context
        return self

    @property
    def automaton_states(self) -> int:
        """Number of automaton states (built on demand)."""
        return self._index.automaton.states


def _check(source: str, group: str | None) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: use one of {', '.join(SOURCES)}")
    if group is not None and group not in GROUPS:
        raise ValueError(f"unknown group {group!r}: use one of {', '.join(GROUPS)}")
