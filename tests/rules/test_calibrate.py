"""Calibration (rules/calibrate.py): thresholds for rules OR scorer, chosen on dev only, by
cross-validation within dev so that the false-positive rate they promise is one measured on
lines they were not chosen on.

The scorer here is a small table-driven stand-in (category scores per line, written below) so
that what the calibration should choose can be worked out by hand; the real shipped scorer and
the real ``vigil-rules calibrate`` command run in the last test."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import rules
from rules.calibrate import _GRID, _fit, _folds, calibrate
from rules.corpus import Sample, load_corpus
from rules.scorer import DEFAULT_MODEL, Score, Scorer

from .conftest import ROOT


@dataclass
class TableScorer:
    """Scores per line text, as the real Scorer reports them (one window, severity 4)."""

    table: dict[str, dict[str, float]]
    folder: Path = Path(".")

    def score(self, text: str) -> list[Score]:
        return [Score(cat, value, 4, text) for cat, value in self.table.get(text, {}).items()]

    reads = staticmethod(Scorer.reads)


def _sample(text: str, category: str) -> Sample:
    return Sample(text, category, 0 if category == "none" else 4, "plain", "en", "keys",
                  "fam", "t.tsv", 1)


def _counts(rules_on: np.ndarray, scores: np.ndarray, conc: np.ndarray,
            th: list[float]) -> tuple[int, int]:
    on = rules_on | (scores >= np.array(th)).any(axis=1)
    return int((on & conc).sum()), int((on & ~conc).sum())


@pytest.fixture(scope="module")
def table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """400 lines, two categories: 'a' separates well (concerning lines score high), 'b' is
    noise (benign and concerning lines score alike); 8 benign lines the rules already fire
    on."""
    rng = np.random.default_rng(7)
    n = 400
    conc = np.array([i % 2 == 0 for i in range(n)])
    a = np.where(conc, rng.uniform(0.6, 1.0, n), rng.uniform(0.3, 0.75, n))
    b = rng.uniform(0.3, 0.99, n)
    rules_on = np.zeros(n, dtype=bool)
    rules_on[np.flatnonzero(~conc)[:8]] = True
    return rules_on, np.stack([a, b], axis=1), conc


@pytest.mark.parametrize("method", ["per_category", "global"])
def test_a_fit_stays_within_its_budget_and_could_not_lower_a_threshold(
        table: tuple[np.ndarray, np.ndarray, np.ndarray], method: str) -> None:
    rules_on, scores, conc = table
    rows = np.arange(len(conc))
    budget = 20
    th, caught, fp = _fit(rules_on, scores, conc, rows, budget, method)
    assert (caught, fp) == _counts(rules_on, scores, conc, th)
    assert 8 <= fp <= budget  # the rules' own 8 count against the budget
    if method == "global":
        assert th[0] == th[1]
        nxt = _GRID[_GRID.index(th[0]) + 1]
        assert _counts(rules_on, scores, conc, [nxt, nxt])[1] > budget
    else:
        # the separating category is opened far more than the noise one
        assert th[0] < th[1]
        for c in range(2):
            k = _GRID.index(th[c])
            if k + 1 < len(_GRID):
                lower = list(th)
                lower[c] = _GRID[k + 1]
                got, cost = _counts(rules_on, scores, conc, lower)
                assert cost > budget or got == caught


def test_no_budget_left_after_the_rules_keeps_the_scorer_shut(
        table: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    rules_on, scores, conc = table
    th, _, fp = _fit(rules_on, scores, conc, np.arange(len(conc)), 5, "per_category")
    assert th == [_GRID[0], _GRID[0]]
    assert fp == _counts(rules_on, scores, conc, th)[1] >= 8  # the rules' own are over 5


def test_folds_come_from_the_text_so_they_are_the_same_on_every_run() -> None:
    samples = [_sample(f"line {i}", "none") for i in range(1000)]
    first, again = _folds(samples, 5), _folds(list(reversed(samples)), 5)
    assert first == list(reversed(again))
    sizes = np.bincount(first, minlength=5)
    assert sizes.min() > 150  # about 200 each


def _corpus(n: int = 600) -> tuple[list[Sample], TableScorer]:
    rng = np.random.default_rng(11)
    samples, table = [], {}
    for i in range(n):
        concerning = i % 3 == 0
        text = f"synthetic line number {i}"
        samples.append(_sample(text, "suicide" if concerning else "none"))
        good = rng.uniform(0.7, 1.0) if concerning else rng.uniform(0.3, 0.8)
        table[text] = {"suicide": float(good), "bullying": float(rng.uniform(0.3, 0.99))}
    return samples, TableScorer(table)


def test_cross_validation_promises_a_held_out_rate_within_the_target() -> None:
    samples, scorer = _corpus()
    ruleset = rules.load_library(rules.DEFAULT_LIBRARY)  # fires on none of these lines
    target = 0.03
    cal = calibrate(samples, ruleset, scorer, target, folds=5)  # type: ignore[arg-type]
    assert cal.folds == 5 and cal.cv_fp is not None and cal.cv_recall is not None
    assert cal.cv_fp <= target
    tried = {(m, share) for m, share, _, _ in cal.trials}
    assert {m for m, _ in tried} == {"per_category", "global"} and len(tried) == 16
    best = max(r for _, _, r, f in cal.trials if f <= target)
    assert cal.cv_recall == best  # the best held-out recall within the target was kept
    # the final fit may spend only the chosen share of the budget on dev itself
    assert cal.dev_fp <= target * cal.budget_share + 1e-9
    assert cal.thresholds["suicide"] < cal.thresholds["bullying"]  # noise stays shut


def test_one_fold_is_the_in_sample_fit_and_spends_the_whole_budget() -> None:
    samples, scorer = _corpus()
    ruleset = rules.load_library(rules.DEFAULT_LIBRARY)
    cal = calibrate(samples, ruleset, scorer, 0.03, folds=1)  # type: ignore[arg-type]
    assert cal.folds == 1 and cal.cv_fp is None and cal.trials == ()
    assert cal.method == "per_category" and cal.budget_share == 1.0
    cv = calibrate(samples, ruleset, scorer, 0.03, folds=5)  # type: ignore[arg-type]
    # in-sample, the single fit looks at least as good as the cross-validated choice does
    assert cal.dev_recall >= cv.dev_recall


def test_the_command_reads_dev_only_and_a_dry_run_writes_nothing(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model)
    before = (model / "manifest.json").read_bytes()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    header = "category\tseverity\tform\tlang\tsource\tfamily\ttext\n"
    src = ROOT / "rules" / "corpus"
    # two real files; calibrate must read only their dev lines
    for name in ("g1_suicide.tsv", "b1_hyperbole.tsv"):
        text = (src / name).read_text(encoding="utf-8")
        assert text.startswith(header)
        (corpus / name).write_text(text, encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "rules.cli", "calibrate", str(corpus),
                        "--model", str(model), "--folds", "2", "--dry-run"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    dev = load_corpus([corpus], "dev")
    assert out["benign"] + out["concerning"] == len(dev)
    assert out["folds"] == 2 and out["cv_fp"] is not None
    assert (model / "manifest.json").read_bytes() == before
    r = subprocess.run([sys.executable, "-m", "rules.cli", "calibrate", str(corpus),
                        "--model", str(model), "--folds", "0"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode != 0 and "--folds must be 1 or more" in r.stderr
