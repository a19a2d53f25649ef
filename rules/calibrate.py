"""Choose the scorer's threshold on the dev split, given the rules it runs beside.

The rules' own false positives use part of the budget, so the threshold is the lowest one at
which *rules OR scorer* stays within ``target_fp`` on dev benign lines. Only the dev split
is read: the test split is never used to choose anything. The result is written into the
artefact's manifest (``thresholds``), which is not one of the hashed files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from .corpus import Sample
from .evaluate import ALERT_SEVERITY
from .model import GROUPS
from .ruleset import RuleSet
from .scorer import Scorer

__all__ = ["Calibration", "calibrate", "write_thresholds"]


@dataclass(frozen=True)
class Calibration:
    threshold: float
    dev_recall: float
    dev_fp: float
    rules_fp: float
    benign: int
    concerning: int


def calibrate(samples: Sequence[Sample], ruleset: RuleSet, scorer: Scorer,
              target_fp: float = 0.015, floor: float = 0.3) -> Calibration:
    """The lowest threshold (not below ``floor``) keeping rules-or-scorer FP within budget."""
    fired: list[bool] = []
    best: list[float] = []
    for s in samples:
        hits = ruleset.scan(s.text, s.source) + ruleset.evaluate(s.text, s.source)
        fired.append(any(h.rule.severity >= ALERT_SEVERITY for h in hits))
        scores = [x.score for x in scorer.score(s.text) if x.severity >= ALERT_SEVERITY]
        best.append(max(scores, default=0.0))
    benign = [i for i, s in enumerate(samples) if not s.concerning]
    conc = [i for i, s in enumerate(samples) if s.concerning]
    rules_fp = sum(fired[i] for i in benign) / max(1, len(benign))
    allowed = int(target_fp * len(benign)) - sum(fired[i] for i in benign)
    free = sorted((best[i] for i in benign if not fired[i]), reverse=True)
    t = free[allowed] + 1e-4 if 0 <= allowed < len(free) else (1.0 if allowed < 0 else floor)
    t = min(max(t, floor), 0.999)
    fp = sum(fired[i] or best[i] >= t for i in benign) / max(1, len(benign))
    rec = sum(fired[i] or best[i] >= t for i in conc) / max(1, len(conc))
    return Calibration(round(t, 4), round(rec, 4), round(fp, 4), round(rules_fp, 4),
                       len(benign), len(conc))


def write_thresholds(scorer: Scorer, cal: Calibration, target_fp: float) -> None:
    path = scorer.folder / "manifest.json"
    man = json.loads(path.read_text(encoding="utf-8"))
    man["thresholds"] = {"default": {g: cal.threshold for g in GROUPS}}
    man["calibration"] = {**cal.__dict__, "target_fp": target_fp, "split": "dev"}
    path.write_text(json.dumps(man, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    scorer.thresholds = man["thresholds"]
