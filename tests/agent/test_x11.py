"""A real agent process on a real X desktop (Xvfb + openbox + xterm), keys typed by xdotool."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from proto import vigil_pb2 as pb
from tests.support.agent import AgentProcess, spool_captures, write_config
from tests.support.x11 import XDesktop, have_x_tools, wait_for

pytestmark = [pytest.mark.x11,
              pytest.mark.skipif(not have_x_tools(), reason="needs Xvfb, openbox, xdotool")]


@pytest.fixture(scope="module")
def x() -> Iterator[XDesktop]:
    with XDesktop() as desk:
        yield desk


@pytest.fixture
def agent(x: XDesktop, tmp_path: Path, library: Path) -> Iterator[AgentProcess]:
    cfg = write_config(tmp_path / "agent.toml", rules_library=str(library),
                       watch_media=False, screenshot_min_severity=6)
    x.close_windows()  # start every test on a bare desktop
    with AgentProcess(tmp_path / "data", config_file=cfg, env=x.env,
                      extra_args=("--verbose",)) as proc:
        proc.wait_for_log("Vigil agent is running")
        yield proc
    print(proc.output)  # shown by pytest when a test fails
    assert proc.proc is not None and proc.proc.returncode == 0, proc.output


def caps(agent: AgentProcess, rule_id: str) -> list[pb.Capture]:
    return [c for c in spool_captures(agent.data_dir) if c.rule_id == rule_id]


def test_typed_phrase_becomes_capture_in_spool(x: XDesktop, agent: AgentProcess) -> None:
    agent.wait_for_focus(x.open_xterm("Homework notes"))
    x.type_text("echo sometimes I cut myself")
    x.key("Return")
    [cap] = wait_for(lambda: caps(agent, "self_harm.test"), what="the typed-phrase capture")
    assert cap.source == pb.SOURCE_KEYS and cap.match == "cut myself"
    assert cap.window_title == "Homework notes" and cap.process == "xterm"
    assert "cut myself" in cap.context and len(cap.context) <= 120


def test_window_title_hit_and_rename(x: XDesktop, agent: AgentProcess) -> None:
    win = x.open_xterm("Unblocked Games 66 - Chromium")
    [cap] = wait_for(lambda: caps(agent, "circumvention.proxy"), what="the title capture")
    assert cap.source == pb.SOURCE_WINDOW and cap.window_title.startswith("Unblocked Games")
    x.set_title(win, "nobody likes you - Messages")  # a tab title change is seen too
    [cap2] = wait_for(lambda: caps(agent, "bullying.test"), what="the renamed-title capture")
    assert cap2.source == pb.SOURCE_WINDOW and cap2.process == "xterm"


def test_focus_change_resets_context(x: XDesktop, agent: AgentProcess) -> None:
    a = x.open_xterm("Window A")
    b = x.open_xterm("Window B")
    x.activate(a)
    agent.wait_for_focus(a)
    x.type_text("echo nobody likes")
    x.activate(b)
    agent.wait_for_focus(b)
    x.type_text(" you")  # the phrase is split across two windows: no hit
    x.type_text(" echo want to disappear")
    x.key("Return")
    [cap] = wait_for(lambda: caps(agent, "self_harm.test"), what="the second window's capture")
    assert cap.window_title == "Window B"
    assert caps(agent, "bullying.test") == []


def test_excluded_window_is_not_matched(x: XDesktop, agent: AgentProcess) -> None:
    secret = x.open_xterm("KeePassXC - Passwords.kdbx")
    agent.wait_for_focus(secret)
    x.type_text("echo i want to disappear nobody likes you")
    x.key("Return")
    agent.wait_for_focus(x.open_xterm("Diary"))
    x.type_text("echo i cut myself")
    x.key("Return")
    wait_for(lambda: caps(agent, "self_harm.test"), what="the capture typed after leaving")
    x.activate(secret)
    all_caps = spool_captures(agent.data_dir)
    assert [c.window_title for c in all_caps] == ["Diary"]
    assert caps(agent, "bullying.test") == []


def test_status_while_running_and_install_check(x: XDesktop, agent: AgentProcess) -> None:
    import subprocess
    import sys

    agent.wait_for_focus(x.open_xterm("Status check"))
    x.type_text("echo nobody likes you")
    x.key("Return")
    wait_for(lambda: caps(agent, "bullying.test"), what="a capture to report")
    cmd = [sys.executable, "-m", "agent.cli"]
    # the learned scorer may add its own capture for the same line (bullying at a higher
    # severity than the test rule's), so status must report the spool's real depth
    before = len(spool_captures(agent.data_dir))
    out = subprocess.run([*cmd, "status", "--data-dir", str(agent.data_dir)],
                         capture_output=True, text=True, timeout=60, env=x.env, check=True)
    after = len(spool_captures(agent.data_dir))
    assert f"running (pid {agent.pid})" in out.stdout
    assert "window titles, typed phrases" in out.stdout
    depth = re.search(r"Spool: (\d+) captures waiting", out.stdout)
    assert depth and before <= int(depth.group(1)) <= after and before >= 1, out.stdout
    assert "Rules version: 0" in out.stdout
    assert "Learned scorer: model " in out.stdout
    chk = subprocess.run([*cmd, "install-check"], capture_output=True, text=True, timeout=60,
                         env=x.env)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    assert "Keyboard access: OK (RECORD extension)" in chk.stdout
    assert "event-driven" in chk.stdout and "Media detection: OK" in chk.stdout
