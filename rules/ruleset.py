"""A compiled, immutable rule set. Swap rule sets by replacing one reference."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .automaton import Automaton
from .matcher import StreamMatcher
from .model import GROUPS, SOURCES, Hit, Rule
from .normalise import normalise

__all__ = ["RuleSet", "rule_to_dict"]


def rule_to_dict(rule: Rule) -> dict[str, Any]:
    """The canonical, JSON-ready form of a rule (used for hashing and bundles)."""
    return {
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


def phrase_key(phrase: str) -> str:
    """The automaton key for a phrase: normalised, space-padded; ``*`` suffix = prefix."""
    prefix = phrase.endswith("*")
    core = normalise(phrase[:-1] if prefix else phrase)
    return " " + core + ("" if prefix else " ")


@dataclass(frozen=True)
class _Index:
    """Everything a matcher needs: automaton plus per-key entries."""

    rules: tuple[Rule, ...]
    automaton: Automaton
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
        automaton=Automaton(ordered),
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

    def compiled(self) -> RuleSet:
        """Build the automaton now (otherwise it is built by the first ``matcher()``)."""
        _ = self._index
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
