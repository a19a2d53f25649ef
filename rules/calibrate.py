"""Choose the scorer's thresholds on the dev split, given the rules it runs beside.

The rules' own false positives use part of the budget, so thresholds are chosen for *rules OR
scorer* within ``target_fp`` on dev benign lines. One threshold per category, found greedily:
start every category at the top of a grid, and repeatedly lower the one whose next step buys
the most recall per false positive, until the budget is spent. Only the dev split is read: the
test split is never used to choose anything. The result is written into the artefact's
manifest (``thresholds``), which is not one of the hashed files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from .corpus import Sample
from .evaluate import ALERT_SEVERITY
from .model import GROUPS
from .ruleset import RuleSet
from .scorer import Scorer

__all__ = ["Calibration", "calibrate", "write_thresholds"]

_GRID = [round(0.99 - 0.01 * k, 2) for k in range(70)]  # 0.99 down to 0.30


@dataclass(frozen=True)
class Calibration:
    thresholds: dict[str, float]
    dev_recall: float
    dev_fp: float
    rules_fp: float
    benign: int
    concerning: int


def _tables(samples: Sequence[Sample], ruleset: RuleSet, scorer: Scorer
            ) -> tuple[list[bool], list[dict[str, float]]]:
    """Per sample: did the rules alert; and per category the scorer's best alerting window."""
    fired, best = [], []
    for s in samples:
        hits = ruleset.scan(s.text, s.source) + ruleset.evaluate(s.text, s.source)
        fired.append(any(h.rule.severity >= ALERT_SEVERITY for h in hits))
        per: dict[str, float] = {}
        for w in scorer.score(s.text):
            if w.severity >= ALERT_SEVERITY and w.score > per.get(w.category, 0.0):
                per[w.category] = w.score
        best.append(per)
    return fired, best


def calibrate(samples: Sequence[Sample], ruleset: RuleSet, scorer: Scorer,
              target_fp: float = 0.018) -> Calibration:
    import numpy as np

    fired, best = _tables(samples, ruleset, scorer)
    cats = sorted({c for per in best for c in per})
    scores = np.array([[per.get(c, 0.0) for c in cats] for per in best]).reshape(
        len(samples), len(cats))
    rules_on = np.array(fired, dtype=bool)
    is_conc = np.array([s.concerning for s in samples], dtype=bool)
    benign = [i for i, s in enumerate(samples) if not s.concerning]
    conc = [i for i, s in enumerate(samples) if s.concerning]
    budget = int(target_fp * len(benign))
    t = {c: _GRID[0] for c in cats}

    def counts(th: dict[str, float]) -> tuple[int, int]:
        vec = np.array([th[c] for c in cats])
        on = rules_on | (scores >= vec).any(axis=1) if cats else rules_on
        return int((on & is_conc).sum()), int((on & ~is_conc).sum())

    caught, fp = counts(t)
    while True:
        choice = None
        for c in cats:
            k = _GRID.index(t[c])
            if k + 1 >= len(_GRID):
                continue
            trial = {**t, c: _GRID[k + 1]}
            got, cost = counts(trial)
            gain, extra = got - caught, cost - fp
            if cost > budget or gain <= 0:
                continue
            value = gain / (extra + 0.5)
            if choice is None or value > choice[0]:
                choice = (value, c, got, cost)
        if choice is None:
            # no single step gains: try lowering each category further in one jump
            moved = False
            for c in cats:
                k = _GRID.index(t[c])
                for k2 in range(k + 2, min(k + 8, len(_GRID))):
                    trial = {**t, c: _GRID[k2]}
                    got, cost = counts(trial)
                    if cost <= budget and got > caught:
                        t, caught, fp, moved = trial, got, cost, True
                        break
            if not moved:
                break
            continue
        _, c, caught, fp = choice
        t[c] = _GRID[_GRID.index(t[c]) + 1]
    rules_fp = sum(fired[i] for i in benign)
    return Calibration(t, round(caught / max(1, len(conc)), 4), round(fp / max(1, len(benign)), 4),
                       round(rules_fp / max(1, len(benign)), 4), len(benign), len(conc))


def write_thresholds(scorer: Scorer, cal: Calibration, target_fp: float) -> None:
    path = scorer.folder / "manifest.json"
    man = json.loads(path.read_text(encoding="utf-8"))
    top = max(cal.thresholds.values(), default=0.99)
    man["thresholds"] = {"default": {g: top for g in GROUPS},
                         **{c: {g: v for g in GROUPS} for c, v in cal.thresholds.items()}}
    man["calibration"] = {**asdict(cal), "target_fp": target_fp, "split": "dev",
                          "method": "greedy per-category thresholds on a 0.01 grid, "
                                    "rules OR scorer within the budget"}
    path.write_text(json.dumps(man, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    scorer.thresholds = man["thresholds"]
