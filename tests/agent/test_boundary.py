"""The boundary layer on the agent: the context rules and the shipped learned scorer run at
each finished context, off the input thread, and their hits become captures with reasons.

Real parts: the shipped rule library, the shipped scorer (int8 ONNX), the real monitor,
capture builder and SQLite spool. The only stand-in is a detector that blocks on purpose, to
prove the keyboard path never waits for the scorer and a backlog is counted, not hidden.
"""

from __future__ import annotations

import threading
from pathlib import Path

import rules
from agent.boundary import MAX_PENDING, BoundaryWorker, Context
from agent.capture import CaptureBuilder
from agent.config import Config
from agent.monitor import Monitor
from agent.paths import DataDir
from agent.rulestate import ActiveRules
from agent.sources import KeyEvent, WindowInfo
from agent.spool import Spool
from rules.scorer import load_scorer

#: Caught by the learned scorer (or the context layer), not by a plain library phrase.
SCORED = "ngl nobody would even notice if i was gone, ive been planning how"
#: Matches nothing in any layer: must leave no trace.
PRIVATE = "the purple giraffe borrowed seventeen umbrellas from grandad on tuesday"


def _monitor(tmp_path: Path) -> tuple[Monitor, Spool]:
    data = DataDir(tmp_path / "data").ensure()
    spool = Spool(data.spool)
    builder = CaptureBuilder(spool, os_user="pupil", hostname="laptop", screenshot=lambda: b"")
    active = ActiveRules(data).load()
    mon = Monitor(Config(), active, builder, scorer=load_scorer())
    mon.boundary.start()
    mon.keys.focus(WindowInfo("Notes", "gedit", 7))
    return mon, spool


def _type(mon: Monitor, text: str, end: str = "reset") -> None:
    for ch in text:
        mon.on_key(KeyEvent("char", ch))
    mon.on_key(KeyEvent(end))


def test_premise_only_the_boundary_layers_catch_the_scored_line() -> None:
    library = rules.load_library(rules.DEFAULT_LIBRARY)
    assert not [h for h in library.scan(SCORED) if h.rule.severity >= 2]
    got = load_scorer().hits(SCORED)
    assert {h.rule.category for h in got} & {"suicide", "self_harm"}, got


def test_scored_line_becomes_one_capture_with_the_scorers_reason(tmp_path: Path) -> None:
    mon, spool = _monitor(tmp_path)
    try:
        _type(mon, SCORED)
        assert mon.boundary.wait_idle(30)
        caps = spool.all()
        assert len(caps) == 1, [c.rule_id for c in caps]
        cap = caps[0]
        assert cap.rule_id.startswith("model.") or cap.reasons
        assert any("model" in r for r in cap.reasons), list(cap.reasons)
        assert 0 < cap.score <= 1
        assert len(cap.context) <= 120 and cap.window_title == "Notes"
    finally:
        mon.boundary.stop()
        spool.close()


def test_phrase_and_scorer_agreeing_make_one_capture_per_category(tmp_path: Path) -> None:
    mon, spool = _monitor(tmp_path)
    try:
        _type(mon, "i want to kill myself tonight")
        assert mon.boundary.wait_idle(30)
        cats = [c.category for c in spool.all()]
        assert cats.count("suicide") == 1, cats
    finally:
        mon.boundary.stop()
        spool.close()


def test_a_line_that_matches_nothing_leaves_nothing(tmp_path: Path) -> None:
    mon, spool = _monitor(tmp_path)
    try:
        _type(mon, PRIVATE)
        assert mon.boundary.wait_idle(30)
        assert spool.all() == []
        assert mon.boundary.scored >= 1  # it was scored, and nothing fired
    finally:
        mon.boundary.stop()
        spool.close()
    for p in (tmp_path / "data").rglob("*"):
        if p.is_file():
            assert b"giraffe" not in p.read_bytes(), p


def test_sentence_end_is_a_boundary_before_enter(tmp_path: Path) -> None:
    mon, spool = _monitor(tmp_path)
    try:
        for ch in SCORED + ". ":
            mon.on_key(KeyEvent("char", ch))
        assert mon.boundary.wait_idle(30)
        assert len(spool.all()) == 1  # scored at the full stop, no Enter yet
        mon.on_key(KeyEvent("reset"))  # Enter: the same context again, not a second capture
        assert mon.boundary.wait_idle(30)
        assert len(spool.all()) == 1
    finally:
        mon.boundary.stop()
        spool.close()


class _Stuck:
    """A detector that blocks until released (stands beside the real one above)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def boundary(self, text: str, source: str, group: str | None, ctx: int) -> list[rules.Hit]:
        self.entered.set()
        self.release.wait(30)
        return []


def test_a_stuck_scorer_never_blocks_typing_and_its_backlog_is_counted() -> None:
    stuck = _Stuck()
    drops: list[str] = []
    w = BoundaryWorker(lambda: stuck, lambda hits, ctx: None, group=lambda: None,  # type: ignore[arg-type,return-value]
                       context_chars=lambda: 120, on_drop=drops.append)
    w.start()
    try:
        w.submit(Context("keys:0", "first", "keys", None))
        assert stuck.entered.wait(10)
        for i in range(MAX_PENDING + 5):  # returns at once even though the worker is stuck
            w.submit(Context(f"keys:{i + 1}", f"line {i}", "keys", None))
        assert drops == ["scorer_backlog"] * 5
    finally:
        stuck.release.set()
        assert w.wait_idle(30)
        w.stop()


def test_a_concerning_window_shown_again_is_captured_again(tmp_path: Path) -> None:
    """Layers agree once per showing, not once per window for ever."""
    data = DataDir(tmp_path / "data").ensure()
    spool = Spool(data.spool)
    builder = CaptureBuilder(spool, os_user="pupil", hostname="laptop", screenshot=lambda: b"",
                             merge_seconds=0)
    mon = Monitor(Config(), ActiveRules(data).load(), builder, scorer=None)
    try:
        title = "how to kill myself - Google Search"
        for _ in range(2):
            mon.on_window(WindowInfo(title, "chromium", 9))
            mon.on_window(WindowInfo("Homework", "gedit", 3))
        assert [c.window_title for c in spool.all()].count(title) == 2
    finally:
        spool.close()
