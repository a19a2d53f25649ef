"""Choose the scorer's thresholds on the dev split, given the rules it runs beside.

The rules' own false positives use part of the budget, so thresholds are chosen for *rules OR
scorer* within ``target_fp`` on dev benign lines. One threshold per category, found greedily
(start every category at the top of a grid, and repeatedly lower the one whose next step buys
the most recall per false positive), or one for all; which of the two, and how much of the
budget the in-sample fit may spend, is chosen by cross-validation within dev (see
:func:`calibrate`). Only the dev split is read: the test split is never used to choose
anything. The result is written into the artefact's
manifest (``thresholds``), which is not one of the hashed files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .corpus import Sample
from .evaluate import ALERT_SEVERITY
from .model import GROUPS
from .ruleset import RuleSet
from .scorer import Scorer

__all__ = ["Calibration", "calibrate", "write_thresholds"]

#: Thresholds tried, high to low: fine near the top (the scorer puts many lines above 0.99, so
#: 0.99 alone as the highest step let no threshold shut out its most confident false
#: positives), then 0.005 apart down to 0.30.
_GRID = [0.9999, 0.9995, 0.999, 0.998, 0.997, 0.996, 0.995, 0.993, 0.99,
         *(round(0.985 - 0.005 * k, 3) for k in range(138))]


@dataclass(frozen=True)
class Calibration:
    thresholds: dict[str, float]
    dev_recall: float
    dev_fp: float
    rules_fp: float
    benign: int
    concerning: int
    method: str = "per_category"
    budget_share: float = 1.0   # the share of target_fp the final fit may spend in-sample
    folds: int = 1
    cv_recall: float | None = None  # held-out estimates from cross-validation within dev
    cv_fp: float | None = None
    #: every (method, budget share) tried: held-out recall and false-positive rate
    trials: tuple[tuple[str, float, float, float], ...] = ()


def _tables(samples: Sequence[Sample], ruleset: RuleSet, scorer: Scorer
            ) -> tuple[list[bool], list[dict[str, float]]]:
    """Per sample: did the rules alert; and per category the scorer's best alerting window."""
    fired, best = [], []
    for s in samples:
        hits = ruleset.scan(s.text, s.source) + ruleset.evaluate(s.text, s.source)
        fired.append(any(h.rule.severity >= ALERT_SEVERITY for h in hits))
        per: dict[str, float] = {}
        for w in scorer.score(s.text) if scorer.reads(s.text, s.source) else ():
            if w.severity >= ALERT_SEVERITY and w.score > per.get(w.category, 0.0):
                per[w.category] = w.score
        best.append(per)
    return fired, best


def _fit(rules_on: Any, scores: Any, is_conc: Any, rows: Any, budget: int,
         method: str) -> tuple[list[float], int, int]:
    """Thresholds (one per column of *scores*) chosen on *rows* only: rules OR scorer may
    alert on at most *budget* benign rows. ``method`` is ``per_category`` (greedy: lower the
    category whose next grid step buys the most recall per false positive) or ``global`` (one
    threshold for every category: the lowest within the budget). Returns the thresholds and
    the (caught, false positives) they give on *rows*."""
    import numpy as np

    r_on, sc, conc = rules_on[rows], scores[rows], is_conc[rows]
    ncat = sc.shape[1]

    def counts(vec: Any) -> tuple[int, int]:
        on = r_on | (sc >= vec).any(axis=1) if ncat else r_on
        return int((on & conc).sum()), int((on & ~conc).sum())

    if method == "global":
        best = [_GRID[0]] * ncat
        at_best = counts(np.array(best))
        for g in _GRID[1:]:
            trial = counts(np.full(ncat, g))
            if trial[1] > budget:
                break
            best, at_best = [g] * ncat, trial
        return best, at_best[0], at_best[1]
    k = [0] * ncat
    vec = np.array([_GRID[0]] * ncat, dtype=float)
    caught, fp = counts(vec)
    while True:
        choice = None
        for c in range(ncat):
            if k[c] + 1 >= len(_GRID):
                continue
            old = vec[c]
            vec[c] = _GRID[k[c] + 1]
            got, cost = counts(vec)
            vec[c] = old
            gain, extra = got - caught, cost - fp
            if cost > budget or gain <= 0:
                continue
            value = gain / (extra + 0.5)
            if choice is None or value > choice[0]:
                choice = (value, c, got, cost, 1)
        if choice is None:
            # no single step gains: try lowering each category further in one jump
            for c in range(ncat):
                for step in range(2, 8):
                    if k[c] + step >= len(_GRID):
                        break
                    old = vec[c]
                    vec[c] = _GRID[k[c] + step]
                    got, cost = counts(vec)
                    vec[c] = old
                    if cost <= budget and got > caught:
                        choice = (0.0, c, got, cost, step)
                        break
                if choice is not None:
                    break
            if choice is None:
                break
        _, c, caught, fp, step = choice
        k[c] += step
        vec[c] = _GRID[k[c]]
    return [float(v) for v in vec], caught, fp


def _folds(samples: Sequence[Sample], k: int) -> list[int]:
    """A fold per sample from a hash of its text (stable across runs and machines)."""
    import hashlib

    return [int.from_bytes(hashlib.sha256(s.text.encode()).digest()[:4], "big") % k
            for s in samples]


def calibrate(samples: Sequence[Sample], ruleset: RuleSet, scorer: Scorer,
              target_fp: float = 0.03, folds: int = 5) -> Calibration:
    """Thresholds for rules OR scorer on *samples* (the dev split).

    Chosen by cross-validation within the split, so that the false-positive rate they are
    expected to give on lines they were not chosen on (not the rate on the lines that chose
    them, which is optimistic: per-category thresholds fitted on all of dev gave 1.7 % there
    and 3.4 % on test) is within *target_fp*. For each method (per-category greedy, or one
    global threshold) and each internal budget from 30 % to 100 % of *target_fp*, fit on
    ``folds - 1`` folds and count the held-out fold's catches and false positives; keep the
    (method, budget) with the best held-out recall whose held-out false-positive rate is
    within *target_fp*; then fit that on the whole split. ``folds=1`` is the old in-sample
    greedy fit."""
    import numpy as np

    fired, best = _tables(samples, ruleset, scorer)
    cats = sorted({c for per in best for c in per})
    scores = np.array([[per.get(c, 0.0) for c in cats] for per in best]).reshape(
        len(samples), len(cats))
    rules_on = np.array(fired, dtype=bool)
    is_conc = np.array([s.concerning for s in samples], dtype=bool)
    n_benign = int((~is_conc).sum())
    n_conc = int(is_conc.sum())
    everything = np.arange(len(samples))
    chosen = ("per_category", 1.0)
    cv_recall = cv_fp = None
    trials: list[tuple[float, float, str, float]] = []
    if folds > 1:
        fold = np.array(_folds(samples, folds))
        for method in ("per_category", "global"):
            for share in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
                caught = fps = 0
                for f in range(folds):
                    train, held = everything[fold != f], everything[fold == f]
                    budget = int(target_fp * share * int((~is_conc[train]).sum()))
                    th, _, _ = _fit(rules_on, scores, is_conc, train, budget, method)
                    on = rules_on[held] | ((scores[held] >= np.array(th)).any(axis=1)
                                           if cats else False)
                    caught += int((on & is_conc[held]).sum())
                    fps += int((on & ~is_conc[held]).sum())
                trials.append((caught / max(1, n_conc), fps / max(1, n_benign), method, share))
        within = [t for t in trials if t[1] <= target_fp] or [min(trials, key=lambda t: t[1])]
        cv_recall, cv_fp, method, share = max(within, key=lambda t: (t[0], -t[1]))
        chosen = (method, share)
    method, share = chosen
    th, caught, fp = _fit(rules_on, scores, is_conc, everything,
                          int(target_fp * share * n_benign), method)
    rules_fp = int((rules_on & ~is_conc).sum())
    return Calibration(dict(zip(cats, th, strict=True)), round(caught / max(1, n_conc), 4),
                       round(fp / max(1, n_benign), 4), round(rules_fp / max(1, n_benign), 4),
                       n_benign, n_conc, method=method, budget_share=share, folds=folds,
                       cv_recall=None if cv_recall is None else round(cv_recall, 4),
                       cv_fp=None if cv_fp is None else round(cv_fp, 4),
                       trials=tuple((m, sh, round(r, 4), round(f, 4))
                                    for r, f, m, sh in (trials if folds > 1 else ())))


def write_thresholds(scorer: Scorer, cal: Calibration, target_fp: float) -> None:
    path = scorer.folder / "manifest.json"
    man = json.loads(path.read_text(encoding="utf-8"))
    top = max(cal.thresholds.values(), default=0.99)
    man["thresholds"] = {"default": {g: top for g in GROUPS},
                         **{c: {g: v for g in GROUPS} for c, v in cal.thresholds.items()}}
    man["calibration"] = {**asdict(cal), "target_fp": target_fp, "split": "dev",
                          "how": f"{cal.method} thresholds on a grid from 0.9999 to 0.30, "
                                 "rules OR scorer; "
                                 f"method and in-sample budget chosen by {cal.folds}-fold "
                                 "cross-validation within dev for a held-out false-positive "
                                 "rate within target_fp"}
    path.write_text(json.dumps(man, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    scorer.thresholds = man["thresholds"]
