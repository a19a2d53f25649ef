"""Password fields are never matched: a real AT-SPI accessibility bus (a session dbus-daemon,
at-spi-bus-launcher and at-spi2-registryd, as a desktop session has them), real Chromium with
accessibility on, a real ``vigil-agent run`` process, keys typed with xdotool.

The page is a sign-in form that is not titled like one (a username, a password, a textarea):
only the accessibility bus can tell the agent that the second field is a password. Without
the bus the agent says in ``status`` that password detection is degraded and falls back to
excluding sign-in pages by title.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proto import vigil_pb2 as pb
from tests.agent.xkeys import autorepeat_off
from tests.support.agent import ROOT, AgentProcess, spool_captures, write_config
from tests.support.x11 import XDesktop, have_x_tools, wait_for

CHROMIUM = "/usr/bin/chromium"
LAUNCHER = "/usr/libexec/at-spi-bus-launcher"
pytestmark = [pytest.mark.x11, pytest.mark.browser,
              pytest.mark.skipif(not (have_x_tools() and shutil.which(CHROMIUM)
                                      and shutil.which("dbus-daemon")
                                      and os.path.exists(LAUNCHER)),
                                 reason="needs Xvfb, openbox, xdotool, chromium, dbus-daemon "
                                        "and at-spi2-core")]
# Accessibility on in Chromium: the renderer flag, plus toolkit accessibility
# (ACCESSIBILITY_ENABLED=1 here; org.a11y.Status.IsEnabled on a desktop) for the ATK bridge.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--password-store=basic", "--window-size=900,600", "--force-renderer-accessibility"]
PASSWORD = "Qx7hunter2 cut myself"  # holds a rule phrase: matched, it would be a capture
SECRET = "Qx7hunter2"
FORM = ("<title>{title}</title><input id=u autocomplete=off><input id=p type=password "
        "autocomplete=off><textarea id=t rows=4 cols=40></textarea>")


@pytest.fixture(scope="module")
def x() -> Iterator[XDesktop]:
    with XDesktop() as desk:
        autorepeat_off(desk.display)  # a stalled xdotool must not type a key twice
        yield desk


@pytest.fixture(scope="module")
def session_env(x: XDesktop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A desktop session's D-Bus: a session dbus-daemon that activates the accessibility bus
    (org.a11y.Bus -> at-spi-bus-launcher -> its own dbus-daemon -> at-spi2-registryd) on
    first use. Its own XDG_RUNTIME_DIR, so the bus socket is this test's alone. Every process
    is in one new process group, ended by its id at the end."""
    runtime = tmp_path_factory.mktemp("xdg-runtime")
    runtime.chmod(0o700)
    env = dict(x.env, XDG_RUNTIME_DIR=str(runtime))
    r, w = os.pipe()
    bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", f"--print-address={w}"],
                           pass_fds=(w,), env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as fh:
            address = fh.readline().decode().strip()
        assert address, "dbus-daemon printed no address"
        env["DBUS_SESSION_BUS_ADDRESS"] = address
        yield env
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(bus.pid, signal.SIGTERM)  # the daemon, the launcher, the a11y bus
        bus.wait(timeout=10)
        wait_for(lambda: not _group_alive(bus.pid), what="the accessibility bus to exit")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def page(x: XDesktop, session_env: dict[str, str]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=False, args=ARGS,
                                    env=dict(session_env, ACCESSIBILITY_ENABLED="1"))
        try:
            yield browser.new_page()
        finally:
            browser.close()


def show_form(x: XDesktop, page: Any, title: str, focus: str) -> int:
    page.set_content(FORM.format(title=title))
    page.bring_to_front()  # without it, keys from the X server do not reach the page
    page.focus(focus)
    wid = wait_for(lambda: x._search(f"{title} - Chromium"), what="the Chromium window")
    x.activate(wid)
    return wid


def start_agent(x: XDesktop, tmp_path: Path, library: Path, env: dict[str, str],
                wid: int) -> AgentProcess:
    conf = write_config(tmp_path / "agent.toml", rules_library=str(library),
                        watch_media=False, screenshot_min_severity=6,
                        idle_release_seconds=600.0)
    agent = AgentProcess(tmp_path / "data", config_file=conf, env=env,
                         extra_args=("--verbose",)).start()
    agent.wait_for_log("Vigil agent is running")
    agent.wait_for_focus(wid)
    return agent


def status(agent: AgentProcess) -> str:
    out = subprocess.run([sys.executable, "-m", "agent.cli", "status", "--data-dir",
                          str(agent.data_dir)],
                         capture_output=True, text=True, env=agent.env, timeout=60, cwd=ROOT)
    return out.stdout + out.stderr


def notices(agent: AgentProcess, what: str) -> int:
    return agent.output.count(f"field focus: {what} (role")


def leaked(data_dir: Path, secret: str) -> list[str]:
    """Files in the agent's data dir (spool, -wal, -shm, log, state) holding *secret*."""
    needles = [secret.encode(), secret.encode("utf-16-le")]
    return [str(f) for f in data_dir.rglob("*") if f.is_file()
            and any(n in f.read_bytes() for n in needles)]


def test_password_typed_in_a_browser_is_never_matched_or_stored(
        x: XDesktop, page: Any, session_env: dict[str, str], tmp_path: Path,
        library: Path) -> None:
    wid = show_form(x, page, "Homework portal", "#u")
    agent = start_agent(x, tmp_path, library, session_env, wid)
    try:
        agent.wait_for_log("password fields: watching focus on the accessibility bus")
        wait_for(lambda: "Password fields: told apart" in status(agent),
                 what="status to say password fields are told apart")
        x.type_text("pupil42")
        seen = notices(agent, "password field")
        x.key("Tab")  # into the password field
        wait_for(lambda: notices(agent, "password field") > seen,
                 what="the agent to hear that a password field has focus")
        x.type_text(PASSWORD)
        assert page.input_value("#p") == PASSWORD  # the keys really reached the field
        seen = notices(agent, "not a password field")
        x.key("Tab")  # into the textarea
        wait_for(lambda: notices(agent, "not a password field") > seen,
                 what="the agent to hear the focus left the password field")
        x.type_text("nobody likes you")
        x.key("Return")
        [cap] = wait_for(lambda: [c for c in spool_captures(agent.data_dir)
                                  if c.rule_id == "bullying.test"],
                         what="the phrase typed in the textarea after the password")
        assert cap.match == "nobody likes you" and cap.source == pb.SOURCE_KEYS
        assert cap.window_title.startswith("Homework portal")
        caps = spool_captures(agent.data_dir)
        assert not [c for c in caps if c.rule_id == "self_harm.test"], "password was matched"
        assert not [c for c in caps if SECRET in c.context or SECRET in c.match]
        assert not leaked(agent.data_dir, SECRET)  # while running: spool, WAL, log
    finally:
        assert agent.stop() == 0, agent.output
        print(agent.output)  # shown by pytest when a test fails
    assert not leaked(agent.data_dir, SECRET)
    assert SECRET not in agent.output


def test_without_an_accessibility_bus_sign_in_pages_are_excluded_and_status_says_so(
        x: XDesktop, page: Any, session_env: dict[str, str], tmp_path: Path,
        library: Path) -> None:
    env = {k: v for k, v in session_env.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    wid = show_form(x, page, "Sign in - School Portal", "#t")
    agent = start_agent(x, tmp_path, library, env, wid)
    try:
        def degraded() -> str:
            s = status(agent)
            return s if "Password fields: DEGRADED" in s and "exclusion 'sign in'" in s else ""

        report = wait_for(degraded, what="status to show degraded password detection")
        print(report)
        assert "DBUS_SESSION_BUS_ADDRESS is not set" in report
        assert "sign-in pages are excluded by window title" in report
        assert "Screenshots: the focused window only" in report  # what a screenshot holds
        x.type_text("nobody likes you")  # in a page titled like a sign-in page: not matched
        x.key("Return")
        show_form(x, page, "Homework help", "#t")
        wait_for(lambda: "matches exclusion" not in status(agent),
                 what="the agent to see the page is no longer a sign-in page")
        x.type_text("i cut myself")  # control: an ordinary page is matched as always
        x.key("Return")
        wait_for(lambda: [c for c in spool_captures(agent.data_dir)
                          if c.rule_id == "self_harm.test"], what="the control capture")
        assert not [c for c in spool_captures(agent.data_dir) if c.rule_id == "bullying.test"]
    finally:
        assert agent.stop() == 0, agent.output
