"""The collector-side scoring seam: where the detection engine re-scores a batch.

The ingest service calls :meth:`Scorer.rescore` on every batch after validation and before
triage. The default, :class:`AgentScores`, trusts the agent's layers (its severity and score
are already on each capture). A collector-side engine (the same rules/engine.Detector the agent
runs, say, for agents too old to carry the scorer) implements the same method: it may raise a
capture's severity and add reasons, never lower a severity and never drop a capture, so a
scorer can only make the queue more careful, not lose a concern.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["AgentScores", "Rescore", "Scorable", "Scorer"]


class Scorable(Protocol):
    id: str
    source: str
    category: str
    severity: int
    match: str
    context: str
    window_title: str
    reasons: str
    score: float | None


@dataclass(frozen=True)
class Rescore:
    capture_id: str
    severity: int
    score: float | None
    reason: str


class Scorer(Protocol):
    name: str

    def rescore(self, captures: Sequence[Scorable]) -> list[Rescore]: ...


class AgentScores:
    """Keep what the agent decided (the default): no collector-side re-scoring."""

    name = "agent"

    def rescore(self, captures: Sequence[Scorable]) -> list[Rescore]:
        return []
