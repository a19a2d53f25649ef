"""What the pupil really typed, on a real X desktop: a real ``vigil-agent run`` process,
xterm (bash's readline edits the line), keys and clicks injected with xdotool (XTEST).

Each test fails on the pynput-based source and the append-only key stream it replaces:
a Ctrl shortcut, a click, an idle pause, an arrow-key correction, a remapped accented
letter or a paste each lost a phrase.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proto import vigil_pb2 as pb
from tests.agent.xkeys import autorepeat_off
from tests.support.agent import AgentProcess, spool_captures, write_config
from tests.support.x11 import XDesktop, have_x_tools, wait_for

pytestmark = [pytest.mark.x11,
              pytest.mark.skipif(not have_x_tools("xclip"), reason="needs Xvfb, openbox, "
                                 "xterm, xdotool, xclip")]

WELSH = '''
category = "self_harm"
[[rule]]
id = "self_harm.welsh"
severity = 3
phrases = ["casáu fy hun"]
sources = ["keys"]
screenshot = false
'''


@pytest.fixture(scope="module")
def x() -> Iterator[XDesktop]:
    with XDesktop() as desk:
        autorepeat_off(desk.display)  # a stalled xdotool must not type a key twice
        yield desk


def start_agent(x: XDesktop, tmp_path: Path, library: Path, **cfg: object) -> AgentProcess:
    (library / "welsh.toml").write_text(WELSH)
    conf = write_config(tmp_path / "agent.toml", rules_library=str(library),
                        watch_media=False, screenshot_min_severity=6, **cfg)
    x.close_windows()
    proc = AgentProcess(tmp_path / "data", config_file=conf, env=x.env,
                        extra_args=("--verbose",)).start()
    proc.wait_for_log("Vigil agent is running")
    return proc


@pytest.fixture
def agent(x: XDesktop, tmp_path: Path, library: Path) -> Iterator[AgentProcess]:
    # A long short-idle release, so only the boundary under test can release a phrase.
    proc = start_agent(x, tmp_path, library, idle_release_seconds=600.0)
    yield proc
    assert proc.stop() == 0, proc.output
    print(proc.output)  # shown by pytest when a test fails


def caps(agent: AgentProcess, rule_id: str) -> list[pb.Capture]:
    return [c for c in spool_captures(agent.data_dir) if c.rule_id == rule_id]


def test_ctrl_shortcut_then_enter_keeps_the_phrase(x: XDesktop, agent: AgentProcess) -> None:
    agent.wait_for_focus(x.open_xterm("Chat"))
    x.type_text("echo nobody likes you")
    x.key("ctrl+a")  # readline: to the start of the line; the text is unchanged
    x.key("ctrl+e")
    x.key("Return")
    [cap] = wait_for(lambda: caps(agent, "bullying.test"), what="the capture")
    assert cap.match == "nobody likes you" and cap.window_title == "Chat"


def test_arrow_key_correction_is_matched_as_shown(x: XDesktop, agent: AgentProcess) -> None:
    agent.wait_for_focus(x.open_xterm("Diary"))
    x.type_text("echo ct myself")
    x.key(*["Left"] * 8)  # between "c" and "t"
    x.type_text("u")  # the line now reads "echo cut myself"
    x.key("End", "Return")
    [cap] = wait_for(lambda: caps(agent, "self_harm.test"), what="the corrected phrase")
    assert cap.match == "cut myself" and "echo cut myself" in cap.context


def test_click_ends_the_context_and_releases_the_phrase(x: XDesktop,
                                                         agent: AgentProcess) -> None:
    agent.wait_for_focus(x.open_xterm("Notes"))
    x.type_text("echo i want to disappear")
    x.click(1)  # no Enter: the pupil clicks elsewhere
    [cap] = wait_for(lambda: caps(agent, "self_harm.test"), what="the capture after a click")
    assert cap.match == "want to disappear"


def test_accented_letter_typed_through_a_remapped_key(x: XDesktop,
                                                      agent: AgentProcess) -> None:
    agent.wait_for_focus(x.open_xterm("Dyddiadur"))
    x.type_text("echo dw i'n casáu fy hun")  # xdotool binds á to a spare keycode
    x.key("Return")
    [cap] = wait_for(lambda: caps(agent, "self_harm.welsh"), what="the Welsh capture")
    assert cap.match == "casáu fy hun" and "casáu fy hun" in cap.context


def test_shift_insert_and_middle_click_paste_the_primary_selection(
        x: XDesktop, agent: AgentProcess) -> None:
    agent.wait_for_focus(x.open_xterm("Paste"))
    x.set_selection("nobody likes you", "primary")
    x.type_text("echo ")
    x.key("shift+Insert")  # xterm pastes PRIMARY
    x.key("Return")
    [cap] = wait_for(lambda: caps(agent, "bullying.test"), what="the pasted phrase")
    assert cap.match == "nobody likes you" and cap.source == pb.SOURCE_KEYS
    x.set_selection("i cut myself", "primary")
    x.click(2)  # the middle button pastes PRIMARY at the cursor
    x.key("Return")
    [cap2] = wait_for(lambda: caps(agent, "self_harm.test"), what="the middle-click paste")
    assert cap2.match == "cut myself"


def test_phrase_left_idle_is_released_within_seconds(x: XDesktop, tmp_path: Path,
                                                     library: Path) -> None:
    agent = start_agent(x, tmp_path, library)  # default: released after 2 s idle
    try:
        agent.wait_for_focus(x.open_xterm("Idle"))
        x.type_text("echo i want to disappear")
        typed = time.monotonic()
        # well inside the 30 s context reset that was the only idle boundary before
        [cap] = wait_for(lambda: caps(agent, "self_harm.test"), timeout=15,
                         what="the capture released by the short idle")
        took = time.monotonic() - typed
        print(f"released {took:.2f} s after the last key")
        assert cap.match == "want to disappear"
        x.type_text(" now")  # the context goes on: no second capture for the same phrase
        x.key("Return")
    finally:
        assert agent.stop() == 0, agent.output  # stopping flushes every queued key
    assert len(caps(agent, "self_harm.test")) == 1
