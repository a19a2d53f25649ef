"""The learned scorer never alerts on a bare app, folder or page name shown as a window title.

Found by the agent's own end-to-end test: a window titled "Second window" became a
circumvention capture (the shipped scorer gave it 0.96). "Downloads", "Photos" and "Settings"
scored 0.98-0.998 as pornography. A monitor that flags those on every pupil's laptop every
day buries the DSL. These run the real shipped scorer and the whole detector."""

from __future__ import annotations

import pytest

import rules
from rules.engine import Detector
from rules.scorer import MIN_TITLE_WORDS, Scorer, load_scorer

ORDINARY_TITLES = ["Second window", "Google Chrome", "Settings", "Downloads", "Photos",
                   "Desktop", "Proxy settings", "Notes", "Untitled - Notepad", "Calculator"]


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(rules.load_library(rules.DEFAULT_LIBRARY), load_scorer())


@pytest.mark.parametrize("title", ORDINARY_TITLES)
def test_an_ordinary_short_title_raises_nothing(detector: Detector, title: str) -> None:
    assert detector.detect(title, "window") == [], title


def test_the_scorer_still_reads_those_words_typed_and_longer_titles() -> None:
    assert not Scorer.reads("Downloads", "window")
    assert not Scorer.reads("Google Chrome", "window")
    assert Scorer.reads("Downloads", "keys")   # typed text is the scorer's whatever its length
    assert Scorer.reads("how to kill myself - Google Search", "window")
    assert MIN_TITLE_WORDS == 3


def test_a_short_concerning_title_is_still_caught_by_the_rules(detector: Detector) -> None:
    """The gate is the scorer's only: a title that a rule knows still alerts."""
    hits = detector.detect("suicide methods", "window")
    assert {h.rule.category for h in hits} == {"suicide"}
    assert all(not h.rule.id.startswith("model.") for h in hits)


def test_a_longer_concerning_title_still_reaches_the_scorer(detector: Detector) -> None:
    hits = detector.detect("nobody would even notice if i was gone - Google Search", "window")
    assert "suicide" in {h.rule.category for h in hits}
