"""Measure a detector on labelled samples: the figures ``vigil-rules eval`` prints.

Pure: give it samples and a function from a sample to hits. A line counts as *caught* when
some hit carries severity >= :data:`ALERT_SEVERITY` (what the DSL is alerted to); a benign
line with such a hit is a false positive. Severity fit: the highest severity of a caught
line is within one of its label.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .corpus import BENIGN, Sample
from .model import Hit

__all__ = ["ALERT_SEVERITY", "Outcome", "Report", "evaluate"]

#: The lowest severity that alerts (the corpus promises benign lines never reach it).
ALERT_SEVERITY = 2


@dataclass(frozen=True)
class Outcome:
    """What the detector did with one sample."""

    sample: Sample
    hits: tuple[Hit, ...]

    @property
    def alerts(self) -> tuple[Hit, ...]:
        return tuple(h for h in self.hits if h.rule.severity >= ALERT_SEVERITY)

    @property
    def fired(self) -> bool:
        return bool(self.alerts)

    @property
    def top(self) -> Hit | None:
        """The alert the DSL would see first: highest severity, then the scorer's score."""
        alerts = self.alerts
        if not alerts:
            return None
        return max(alerts, key=lambda h: (h.rule.severity, h.score or 0))


@dataclass
class _Tally:
    n: int = 0
    hit: int = 0

    def add(self, ok: bool) -> None:
        self.n += 1
        self.hit += ok

    @property
    def rate(self) -> float:
        return self.hit / self.n if self.n else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "hit": self.hit, "rate": round(self.rate, 4)}


@dataclass
class Report:
    """Every figure of one evaluation. ``as_dict`` is the ``--json`` form."""

    recall: _Tally = field(default_factory=_Tally)
    recall_sev4: _Tally = field(default_factory=_Tally)
    fp: _Tally = field(default_factory=_Tally)
    severity_fit: _Tally = field(default_factory=_Tally)
    category_right: _Tally = field(default_factory=_Tally)
    per_category: dict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    per_lang: dict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    per_form: dict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    per_source: dict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    fp_family: dict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)
    misses: list[Outcome] = field(default_factory=list)
    false_positives: list[Outcome] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def tab(d: dict[str, _Tally]) -> dict[str, Any]:
            return {k: d[k].as_dict() for k in sorted(d)}

        return {
            "recall": self.recall.as_dict(),
            "recall_sev4": self.recall_sev4.as_dict(),
            "false_positive": self.fp.as_dict(),
            "severity_fit": self.severity_fit.as_dict(),
            "category_right": self.category_right.as_dict(),
            "per_category": tab(self.per_category),
            "per_lang": tab(self.per_lang),
            "per_form": tab(self.per_form),
            "per_source": tab(self.per_source),
            "fp_per_family": tab(self.fp_family),
            "confusion": [{"label": a, "predicted": b, "n": n}
                          for (a, b), n in sorted(self.confusion.items())],
            "misses": [_row(o) for o in self.misses],
            "false_positives": [_row(o) for o in self.false_positives],
        }


def _row(o: Outcome) -> dict[str, Any]:
    s = o.sample
    return {"file": s.file, "line": s.line, "category": s.category, "severity": s.severity,
            "text": s.text, "hits": [{"rule": h.rule.id, "category": h.rule.category,
                                      "severity": h.rule.severity, "reasons": list(h.reasons)}
                                     for h in o.hits]}


def evaluate(samples: Sequence[Sample], detect: Callable[[Sample], Iterable[Hit]],
             progress: Callable[[int, int], None] | None = None) -> Report:
    """Run ``detect`` on every sample and tally the figures."""
    rep = Report()
    for i, s in enumerate(samples, 1):
        o = Outcome(s, tuple(detect(s)))
        top = o.top
        if s.category == BENIGN:
            rep.fp.add(o.fired)
            rep.fp_family[s.family].add(o.fired)
            if o.fired:
                rep.false_positives.append(o)
        else:
            for tally in (rep.recall, rep.per_category[s.category], rep.per_lang[s.lang],
                          rep.per_form[s.form], rep.per_source[s.source]):
                tally.add(o.fired)
            if s.severity >= 4:
                rep.recall_sev4.add(o.fired)
            if top is None:
                rep.misses.append(o)
                rep.confusion[(s.category, BENIGN)] += 1
            else:
                rep.severity_fit.add(abs(top.rule.severity - s.severity) <= 1)
                cats = {h.rule.category for h in o.alerts}
                rep.category_right.add(s.category in cats)
                rep.confusion[(s.category, top.rule.category)] += 1
        if progress is not None:
            progress(i, len(samples))
    return rep
