"""The macOS backend's logic against a simulated Cocoa layer that behaves as Apple documents
it. NOT a macOS test: nothing here has run on a Mac (see README).

Simulated: ``NSWorkspace.frontmostApplication`` and
``NSWorkspaceDidActivateApplicationNotification`` change only when the main run loop turns
(NSWorkspace docs); Accessibility answers ``kAXErrorAPIDisabled`` until the process is
trusted; without Screen Recording a capture shows only the wallpaper; ``/Volumes`` holds the
boot symlink, disk images, shares and internal volumes beside real removable media.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable

import pytest

from agent.backends import macos
from agent.backends.mainloop import run_agent
from agent.config import Config
from agent.platform import guarded_screenshot, select_backends
from agent.sources import WindowInfo


class FakeMac:
    def __init__(self) -> None:
        self.actual = (501, "Safari")   # what the window server knows
        self.cached = (501, "Safari")   # what NSWorkspace says: refreshed by a run-loop turn
        self.observers: list[Callable[[int, str], None]] = []
        self.loop_thread: threading.Thread | None = None
        self._running = False
        self.trusted = True
        self.titles = {501: "how to unblock games - Google Search", 777: "Minecraft Launcher"}
        self.secure = False
        self.screen = False
        self.on_first_turn: Callable[[], None] | None = None

    # the MainLoop side
    def run(self, until: threading.Event) -> None:
        self.loop_thread, self._running = threading.current_thread(), True
        try:
            while not until.is_set():
                self.turn()
                if self.on_first_turn is not None:
                    fn, self.on_first_turn = self.on_first_turn, None
                    fn()
                until.wait(0.005)
        finally:
            self._running = False

    def turn(self) -> None:
        if self.cached != self.actual:
            self.cached = self.actual
            for cb in list(self.observers):
                cb(*self.actual)

    def running(self) -> bool:
        return self._running

    main_loop_running = running

    # the Api side
    def observe_activation(self, on_app: Callable[[int, str], None]) -> Callable[[], None]:
        self.observers.append(on_app)
        return lambda: self.observers.remove(on_app)

    def frontmost(self) -> tuple[int, str]:
        return self.cached

    def ax_trusted(self) -> bool:
        return self.trusted

    def focused(self, pid: int) -> macos.Focused:
        if not self.trusted:
            return macos.Focused(macos.AX_API_DISABLED)
        return macos.Focused(title=self.titles[pid], rect=(10, 20, 800, 600),
                             secure_field=self.secure)

    def screen_capture_allowed(self) -> bool:
        return self.screen

    def volumes(self) -> list[macos.MacVolume]:
        return []


def test_without_the_main_run_loop_the_window_source_refuses_instead_of_going_stale() -> None:
    mac = FakeMac()
    mac.actual = (777, "Minecraft")
    assert mac.frontmost() == (501, "Safari")  # no run-loop turn: NSWorkspace is stale
    with pytest.raises(RuntimeError, match="no Cocoa run loop on the main thread"):
        macos.MacWindowSource(mac, start_timeout=0.2).run(lambda info: None, threading.Event())


def test_app_switches_arrive_through_the_main_run_loop_with_asyncio_in_a_worker() -> None:
    mac = FakeMac()
    got: list[WindowInfo] = []
    seen = threading.Condition()
    source = macos.MacWindowSource(mac, title_interval=0.01)

    def on_change(info: WindowInfo) -> None:
        with seen:
            got.append(info)
            seen.notify_all()

    async def agent(stop: asyncio.Event) -> None:
        assert threading.current_thread() is not threading.main_thread()
        halt = threading.Event()
        runner = threading.Thread(target=source.run, args=(on_change, halt))
        runner.start()
        with seen:
            assert seen.wait_for(lambda: len(got) >= 1, 10)
        mac.actual = (777, "Minecraft")  # the pupil switches app
        with seen:
            assert seen.wait_for(lambda: len(got) >= 2, 10)
        halt.set()
        runner.join(10)

    run_agent(agent, mac)
    assert mac.loop_thread is threading.main_thread()
    assert [(w.process, w.title) for w in got] == [
        ("Safari", "how to unblock games - Google Search"),
        ("Minecraft", "Minecraft Launcher")]
    assert mac.observers == []  # unsubscribed when the source stopped


def test_sigterm_on_the_main_thread_stops_the_asyncio_worker() -> None:
    mac = FakeMac()
    mac.on_first_turn = lambda: signal.raise_signal(signal.SIGTERM)
    stopped: list[bool] = []

    async def agent(stop: asyncio.Event) -> None:
        await asyncio.wait_for(stop.wait(), 10)
        stopped.append(True)

    before = signal.getsignal(signal.SIGTERM)
    run_agent(agent, mac)
    assert stopped == [True]
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored


def test_an_exception_in_the_agent_reaches_the_main_thread() -> None:
    async def agent(stop: asyncio.Event) -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_agent(agent, FakeMac())


def test_titles_need_accessibility_and_say_so_without_it() -> None:
    mac = FakeMac()
    mac.trusted = False
    info, error = macos.read_window(mac, 501, "Safari", mac.ax_trusted())
    assert info == WindowInfo("", "Safari", 501) and error == macos.AX_API_DISABLED
    source = macos.MacWindowSource(mac)
    source._note(error)
    assert "Accessibility is not granted" in source.title_problem
    mac.trusted, mac.secure = True, True
    info, error = macos.read_window(mac, 501, "Safari", mac.ax_trusted())
    assert info is not None and info.title.startswith("how to") and info.password_field
    source._note(error)
    assert source.title_problem == ""


def test_no_screen_recording_means_no_wallpaper_screenshot_and_a_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    mac = FakeMac()
    grabs: list[int] = []

    def grab() -> bytes:
        grabs.append(1)
        return b"\x89PNG wallpaper"

    shot = guarded_screenshot(grab, lambda: macos.screenshot_blocked(mac))
    with caplog.at_level(logging.WARNING):
        assert shot() == b"" and shot() == b""
    assert grabs == []
    assert [r.getMessage() for r in caplog.records].count(
        "screenshot not taken: Screen Recording is not granted: macOS would return only the "
        "wallpaper and menu bar, so no screenshot is taken") == 1
    mac.screen = True
    assert shot() == b"\x89PNG wallpaper" and grabs == [1]


V = macos.MacVolume


@pytest.mark.parametrize(("volume", "removable"), [
    (V("/Volumes/Macintosh HD", is_symlink=True), False),
    (V("/Volumes/Install Xcode", removable=False, ejectable=True, internal=False, local=True,
       protocol="Disk Image"), False),
    (V("/Volumes/staff$", local=False, ejectable=True), False),
    (V("/Volumes/Data", removable=False, ejectable=False, internal=True, local=True,
       protocol="Apple Fabric"), False),
    (V("/Volumes/KINGSTON", removable=True, ejectable=True, internal=False, local=True,
       protocol="USB"), True),
    (V("/Volumes/Seagate", removable=False, ejectable=True, internal=False, local=True,
       protocol="USB"), True),  # a USB hard disk: not "removable media", still removable
    (V("/Volumes/CANON_DC", removable=True, ejectable=True, internal=True, local=True,
       protocol="Secure Digital"), True),  # the built-in SD slot
    (V("/Volumes/NO NAME", removable=True, ejectable=True, internal=False, local=True), True),
])
def test_only_real_removable_media_counts(volume: macos.MacVolume, removable: bool) -> None:
    assert macos.is_removable(volume) is removable


def test_platform_wires_the_macos_screenshot_guard_and_window_rect() -> None:
    b = select_backends(Config(), "macos")
    assert b.screenshot_blocked is not None and b.focused_rect is not None
    assert isinstance(b.window, macos.MacWindowSource)
    b.window._api = FakeMac()
    b.window.pid = 501
    assert b.focused_rect() == (10, 20, 800, 600)
