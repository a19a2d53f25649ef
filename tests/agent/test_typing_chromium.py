"""Editing in a real browser: Chromium (Debian's, through Playwright) on Xvfb + openbox, a
real ``vigil-agent run`` process, keys typed with xdotool. The textarea's value is what the
pupil sees; each test checks the agent matched exactly that (corrections with
Ctrl+Backspace, arrows and selections, pastes with Ctrl+V / Ctrl+Shift+V, Ctrl+A).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proto import vigil_pb2 as pb
from tests.agent.xkeys import autorepeat_off
from tests.support.agent import AgentProcess, spool_captures, write_config
from tests.support.x11 import XDesktop, have_x_tools, wait_for

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.x11,
              pytest.mark.skipif(not (have_x_tools("xclip") and shutil.which(CHROMIUM)),
                                 reason="needs Xvfb, openbox, xdotool, xclip, chromium")]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--password-store=basic", "--window-size=900,600"]


@pytest.fixture(scope="module")
def x() -> Iterator[XDesktop]:
    with XDesktop() as desk:
        autorepeat_off(desk.display)  # a stalled xdotool must not type a key twice
        yield desk


@pytest.fixture(scope="module")
def page(x: XDesktop) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=False, args=ARGS,
                                    env=x.env)
        try:
            yield browser.new_page()
        finally:
            browser.close()


class Desk:
    """One page titled *title* with a focused textarea, and an agent watching it."""

    def __init__(self, x: XDesktop, page: Any, agent: AgentProcess) -> None:
        self.x, self.page, self.agent = x, page, agent

    def caps(self, rule_id: str) -> list[pb.Capture]:
        return [c for c in spool_captures(self.agent.data_dir) if c.rule_id == rule_id]

    @property
    def shown(self) -> str:
        return str(self.page.input_value("#t"))


@pytest.fixture
def desk(x: XDesktop, page: Any, tmp_path: Path, library: Path,
         request: pytest.FixtureRequest) -> Iterator[Desk]:
    title = request.node.name.replace("_", " ")[:40]
    page.set_content(f"<title>{title}</title><textarea id=t rows=5 cols=60></textarea>")
    page.bring_to_front()  # without it, keys from the X server do not reach the page
    page.focus("#t")
    wid = wait_for(lambda: x._search(f"{title} - Chromium"), what="the Chromium window")
    x.activate(wid)
    conf = write_config(tmp_path / "agent.toml", rules_library=str(library),
                        watch_media=False, screenshot_min_severity=6,
                        idle_release_seconds=600.0)
    agent = AgentProcess(tmp_path / "data", config_file=conf, env=x.env,
                         extra_args=("--verbose",)).start()
    try:
        agent.wait_for_log("Vigil agent is running")
        agent.wait_for_focus(wid)
        yield Desk(x, page, agent)
    finally:
        assert agent.stop() == 0, agent.output


def test_ctrl_backspace_correction(desk: Desk) -> None:
    desk.x.type_text("i cut myselg")
    desk.x.key("ctrl+BackSpace")
    desk.x.type_text("myself")
    assert desk.shown == "i cut myself"
    desk.x.key("Return")
    [cap] = wait_for(lambda: desk.caps("self_harm.test"), what="the corrected phrase")
    assert cap.match == "cut myself" and cap.window_title.startswith("test ctrl backspace")


def test_letter_inserted_after_arrow_keys(desk: Desk) -> None:
    desk.x.type_text("i ct myself")
    desk.x.key(*["Left"] * 8)
    desk.x.type_text("u")
    assert desk.shown == "i cut myself"
    desk.x.key("ctrl+End", "Return")
    [cap] = wait_for(lambda: desk.caps("self_harm.test"), what="the corrected phrase")
    assert cap.match == "cut myself" and "i cut myself" in cap.context


def test_selection_replaced_by_typing(desk: Desk) -> None:
    desk.x.type_text("nobody likes me at all")
    desk.x.key("ctrl+Left", "ctrl+Left", "ctrl+shift+Left")  # selects "me"
    desk.x.type_text("you")
    desk.x.key("End", "Home", "shift+End", "Delete")  # then the whole line deleted
    desk.x.key("Return")
    [cap] = wait_for(lambda: desk.caps("bullying.test"), what="the phrase made by a selection")
    assert cap.match == "nobody likes you"


def test_ctrl_a_then_enter_keeps_the_complete_phrase(desk: Desk) -> None:
    desk.x.type_text("honestly i want to disappear")
    desk.x.key("ctrl+a", "Return")  # Enter replaces the selected text
    [cap] = wait_for(lambda: desk.caps("self_harm.test"), what="the capture")
    assert cap.match == "want to disappear"


def test_paste_with_ctrl_v_and_ctrl_shift_v(desk: Desk) -> None:
    desk.x.set_selection("want to disappear", "clipboard")
    desk.x.type_text("i ")
    desk.x.key("ctrl+v")
    assert desk.shown == "i want to disappear"
    desk.x.key("Return")
    [cap] = wait_for(lambda: desk.caps("self_harm.test"), what="the pasted phrase")
    assert cap.match == "want to disappear" and cap.source == pb.SOURCE_KEYS
    desk.x.set_selection("nobody likes you", "clipboard")
    desk.x.key("ctrl+shift+v")  # paste as plain text
    desk.x.click(1)
    [cap2] = wait_for(lambda: desk.caps("bullying.test"), what="the plain-text paste")
    assert cap2.match == "nobody likes you"
