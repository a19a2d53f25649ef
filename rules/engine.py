"""The layered detector: what decides whether one bounded context becomes a capture.

Three layers, each of which can fire alone:

1. the streaming phrase matcher (``RuleSet.matcher``/``scan``): exact and normalised
   phrases, per keystroke, backspace-aware;
2. the context layer (``RuleSet.evaluate``): weighted phrases, combinations, negative
   context, typo tolerance, spaced and masked letters, over the whole context;
3. the learned scorer (``rules.scorer``), per window of the context.

The agent runs layer 1 on every key and layers 2-3 at each boundary (Enter, sentence end,
focus change, click, idle) in a worker thread; ``vigil-rules eval`` and ``scan`` run all
three on each line. A hit keeps its reasons, so the DSL sees why it fired.
"""

from __future__ import annotations

from dataclasses import replace

from .model import Hit
from .ruleset import RuleSet
from .scorer import Scorer

__all__ = ["SCORED_SOURCES", "Detector", "merge_hits"]

#: Sources the scorer reads (media events carry file names, which it was not trained on).
SCORED_SOURCES: frozenset[str] = frozenset({"keys", "window"})


def merge_hits(hits: list[Hit]) -> list[Hit]:
    """One hit per category: the highest severity (the first seen on a tie: streaming hits
    come first and are exact), carrying every layer's reasons, so one context makes one
    capture per category and the DSL still sees each layer that agreed."""
    by_cat: dict[str, list[Hit]] = {}
    for h in hits:
        by_cat.setdefault(h.rule.category, []).append(h)
    out = []
    for group in by_cat.values():
        top = max(group, key=lambda h: h.rule.severity)  # max() keeps the first on a tie
        reasons: list[str] = []
        for h in [top, *(g for g in group if g is not top)]:
            for r in h.reasons or (f"phrase {h.match!r} ({h.rule.id})",):
                if r not in reasons:
                    reasons.append(r)
        score = max((h.score for h in group if h.score is not None), default=None)
        out.append(replace(top, reasons=tuple(reasons), score=score))
    return out


class Detector:
    """Rules plus an optional scorer. Stateless per call, so one instance serves threads."""

    def __init__(self, ruleset: RuleSet, scorer: Scorer | None = None) -> None:
        self.ruleset = ruleset
        self.scorer = scorer

    def boundary(self, text: str, source: str = "keys", group: str | None = None,
                 context_chars: int = 120) -> list[Hit]:
        """Layers 2 and 3 on one context (the streaming layer has already run on it)."""
        hits = list(self.ruleset.evaluate(text, source, group))
        if self.scorer is not None and source in SCORED_SOURCES:
            hits += self.scorer.hits(text, source, group, context_chars)
        return hits

    def detect(self, text: str, source: str = "keys", group: str | None = None,
               context_chars: int = 120) -> list[Hit]:
        """All three layers on one whole text, as if typed and then Enter."""
        hits = self.ruleset.scan(text, source, group)
        hits += self.boundary(text, source, group, context_chars)
        return merge_hits(hits)
