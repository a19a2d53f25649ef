"""The X11 sources in-process: the XGetInputFocus fallback without a window manager, and a
real screenshot through mss."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from agent.capture import grab_screenshot
from agent.sources import StopSignal, WindowInfo
from agent.sources.window_x11 import X11WindowSource
from tests.support.x11 import XDesktop, have_x_tools, wait_for

pytestmark = [pytest.mark.x11,
              pytest.mark.skipif(not have_x_tools(), reason="needs Xvfb, openbox, xdotool")]


def test_input_focus_fallback_without_window_manager() -> None:
    with XDesktop(window_manager=False) as x:
        got: list[WindowInfo] = []
        stop = StopSignal()
        t = threading.Thread(target=X11WindowSource(x.display).run, args=(got.append, stop),
                             daemon=True)
        t.start()
        try:
            a = x.open_xterm("No WM one")
            b = x.open_xterm("No WM two")
            # Without a window manager, a focus request racing a fresh xterm's own start-up
            # is sometimes lost by the X server; re-assert the focus while waiting (the
            # assertion is about what the source reports, not about xdotool).
            def focused(win: int, title: str) -> bool:
                if got and got[-1].title == title:
                    return True
                x.focus(win)
                return False

            wait_for(lambda: focused(a, "No WM one"), interval=0.3, what="focus on one")
            wait_for(lambda: focused(b, "No WM two"), interval=0.3, what="focus on two")
            assert got[-1].process == "xterm"
            titles = [w.title for w in got]
            assert all(t1 != t2 for t1, t2 in itertools.pairwise(titles))
        finally:
            stop.set()
            t.join(timeout=10)
            stop.close()


def test_screenshot_is_a_png_of_the_display(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    with XDesktop() as x:
        monkeypatch.setenv("DISPLAY", x.display)
        png = grab_screenshot()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_each_switch_reported_once_under_openbox() -> None:
    with XDesktop() as x:
        a = x.open_xterm("Switch A")
        b = x.open_xterm("Switch B")
        got: list[WindowInfo] = []
        stop = StopSignal()
        t = threading.Thread(target=X11WindowSource(x.display).run, args=(got.append, stop),
                             daemon=True)
        t.start()
        try:
            wait_for(lambda: got, what="the first report")
            start = len(got)
            for i in range(4):
                x.activate(a if i % 2 == 0 else b)
                want = "Switch A" if i % 2 == 0 else "Switch B"
                wait_for(lambda w=want: got[-1].title == w, what=want)
            x.set_title(a, "Switch A renamed")  # an inactive window's title: not reported
            x.activate(b)  # already active: nothing new
            x.set_title(b, "Switch B renamed")
            wait_for(lambda: got[-1].title == "Switch B renamed", what="the rename")
            assert [w.title for w in got[start:]] == [
                "Switch A", "Switch B", "Switch A", "Switch B", "Switch B renamed"]
        finally:
            stop.set()
            t.join(timeout=10)
            stop.close()


def test_window_screenshot_is_the_focused_window_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import struct
    import zlib

    from agent.capture import window_screenshot
    from agent.sources.window_x11 import focused_window_rect

    def png_size(png: bytes) -> tuple[int, int]:
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        w, h = struct.unpack(">II", png[16:24])
        return int(w), int(h)

    with XDesktop() as x:
        monkeypatch.setenv("DISPLAY", x.display)
        x.open_xterm("Screenshot target")  # 80x10 characters: far smaller than 1024x768
        rect = focused_window_rect(x.display)
        assert rect is not None
        png = window_screenshot(lambda: focused_window_rect(x.display))()
        w, h = png_size(png)
        assert (w, h) == (rect[2], rect[3]) and w < 1024 and h < 768
        assert zlib.crc32(png) != 0


def test_compound_text_title_from_xterm_is_decoded() -> None:
    title = "Unblocked Games 😀 שלום é"
    with XDesktop() as x:
        got: list[WindowInfo] = []
        stop = StopSignal()
        t = threading.Thread(target=X11WindowSource(x.display).run, args=(got.append, stop),
                             daemon=True)
        t.start()
        try:
            x.open_xterm(title)  # xterm stores it as COMPOUND_TEXT, with no _NET_WM_NAME
            wait_for(lambda: got and got[-1].title == title, what="the decoded title")
        finally:
            stop.set()
            t.join(timeout=10)
            stop.close()
