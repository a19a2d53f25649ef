"""A real X desktop for tests: Xvfb + openbox + xterm windows + xdotool input.

Usage (as a context manager, or via the ``x_desktop`` fixture in an area's conftest)::

    from tests.support.x11 import XDesktop, wait_for

    with XDesktop() as x:                 # Xvfb -displayfd (never clashes), openbox started
        win = x.open_xterm("Homework notes")   # waits until mapped; returns the window id
        x.activate(win)                  # xdotool windowactivate --sync
        x.type_text("hello world")       # xdotool type (XTEST: seen by RECORD/pynput)
        x.set_title(win, "New title")    # xdotool set_window --name
        wait_for(lambda: cond(), timeout=20, what="the capture")
        env = x.env                      # os.environ + DISPLAY, for child processes

Every wait is on a condition with a generous timeout; nothing sleeps blindly. Processes are
killed on exit (by pid, never by name). Requires apt packages xvfb, openbox, xterm, xdotool.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

__all__ = ["XDesktop", "have_x_tools", "wait_for"]

T = TypeVar("T")


def have_x_tools(*extra: str) -> bool:
    """True when Xvfb, openbox, xterm and xdotool (and every *extra* tool) are on PATH."""
    return all(shutil.which(t) for t in ("Xvfb", "openbox", "xterm", "xdotool", *extra))


def wait_for(cond: Callable[[], T], timeout: float = 20.0, interval: float = 0.05,
             what: str = "condition") -> T:
    """Poll *cond* until it returns something truthy; return it. Raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class XDesktop:
    """One Xvfb display with openbox; xterm windows opened on demand."""

    def __init__(self, window_manager: bool = True, size: str = "1024x768x24",
                 record: bool = True) -> None:
        self.window_manager = window_manager
        self.record = record  # False: an X server without RECORD (keys cannot be seen)
        self.size = size
        self.display = ""
        self._procs: list[subprocess.Popen[bytes]] = []
        self._xterms: list[subprocess.Popen[bytes]] = []
        self._owners: list[subprocess.Popen[bytes]] = []
        self._tmp = Path(tempfile.mkdtemp(prefix="vigil-x11-"))

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> XDesktop:
        r, w = os.pipe()
        # (Xvfb re-enables every extension after any "+extension": "-extension" goes alone)
        ext = ["+extension", "RECORD", "+extension", "XTEST"] if self.record else [
            "-extension", "RECORD"]
        xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(w), "-screen", "0", self.size, "-nolisten", "tcp", *ext],
            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(w)
        self._procs.append(xvfb)
        buf = b""
        with os.fdopen(r, "rb") as fh:
            while not buf.endswith(b"\n"):
                chunk = fh.read(1)
                if not chunk:
                    raise RuntimeError("Xvfb exited before reporting its display number")
                buf += chunk
        self.display = ":" + buf.decode().strip()
        if self.window_manager:
            self._start_openbox()
        return self

    def _start_openbox(self) -> None:
        log = self._tmp / "openbox.log"
        for attempt in range(3):  # openbox occasionally dies at start-up on a busy machine
            with open(log, "ab") as fh:
                wm = subprocess.Popen(["openbox", "--sm-disable"], env=self.env,
                                      stdout=fh, stderr=fh)
            self._procs.append(wm)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and wm.poll() is None:
                if self._wm_ready():
                    return
                time.sleep(0.05)
            if wm.poll() is None:
                wm.terminate()
                wm.wait(timeout=10)
            if attempt == 2:
                raise TimeoutError("openbox did not manage the display: "
                                   + log.read_text(errors="replace")[-2000:])

    def stop(self) -> None:
        for p in reversed(self._procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self._procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._procs.clear()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> XDesktop:
        try:
            return self.start()
        except BaseException:
            self.stop()  # never leak an Xvfb when start-up fails
            raise

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def env(self) -> dict[str, str]:
        """The environment for child processes: this display, no XAUTHORITY needed."""
        env = dict(os.environ)
        env["DISPLAY"] = self.display
        env.pop("WAYLAND_DISPLAY", None)
        return env

    # -- windows and input -----------------------------------------------------------------
    def xdotool(self, *args: str, timeout: float = 30) -> str:
        out = subprocess.run(["xdotool", *args], env=self.env, capture_output=True,
                             timeout=timeout, check=True)
        return out.stdout.decode().strip()

    def open_xterm(self, title: str, *extra: str, activate: bool = True) -> int:
        """Open an xterm titled *title*; wait until it is mapped (and, unless *activate* is
        False or there is no window manager, active); return its window id."""
        proc = subprocess.Popen(
            ["xterm", "-T", title, "-geometry", "80x10", *extra], env=self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._procs.append(proc)
        self._xterms.append(proc)
        wid = wait_for(lambda: self._search(title), timeout=20, what=f"xterm {title!r}")
        if activate and self.window_manager:
            self.activate(wid)
        return wid

    def focus(self, window: int) -> None:
        """Give *window* the X input focus directly (works without a window manager)."""
        self.xdotool("windowfocus", "--sync", str(window))

    def close_windows(self) -> None:
        """Close every xterm this desktop opened (so the next test starts on a bare desktop)."""
        for p in self._xterms:
            if p.poll() is None:
                p.terminate()
        for p in self._xterms:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p in self._procs:
                self._procs.remove(p)
        self._xterms.clear()

    def activate(self, window: int) -> None:
        """Focus *window* and wait until the window manager reports it active."""
        self.xdotool("windowactivate", "--sync", str(window))
        wait_for(lambda: self.active_window() == window, timeout=20,
                 what=f"window {window} to become active")

    def active_window(self) -> int:
        try:
            return int(self.xdotool("getactivewindow"))
        except (subprocess.CalledProcessError, ValueError):
            return 0

    def set_title(self, window: int, title: str) -> None:
        self.xdotool("set_window", "--name", title, str(window))

    def type_text(self, text: str, delay_ms: int = 12) -> None:
        """Type *text* into the focused window via XTEST (no --window: RECORD sees it)."""
        self.xdotool("type", "--delay", str(delay_ms), "--", text, timeout=120)

    def key(self, *keys: str) -> None:
        """Press named keys, e.g. ``key("Return")`` or ``key("BackSpace")``."""
        self.xdotool("key", *keys)

    def click(self, button: int = 1) -> None:
        """Click a mouse button where the pointer is (XTEST, as a pupil's click)."""
        self.xdotool("click", str(button))

    def set_selection(self, text: str, which: str = "clipboard") -> None:
        """Own the X selection *which* ("clipboard" or "primary") with *text*, as a program
        the pupil copied from would (an ``xclip`` kept in the foreground, stopped with the
        desktop). Needs xclip."""
        for p in self._owners:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=10)
        self._owners.clear()
        proc = subprocess.Popen(["xclip", "-quiet", "-selection", which, "-in"], env=self.env,
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self._procs.append(proc)
        self._owners.append(proc)
        assert proc.stdin is not None
        proc.stdin.write(text.encode())
        proc.stdin.close()
        wait_for(lambda: self._selection(which) == text, what=f"the {which} selection")

    def _selection(self, which: str) -> str:
        out = subprocess.run(["xclip", "-o", "-selection", which], env=self.env,
                             capture_output=True, timeout=10)
        return out.stdout.decode(errors="replace") if out.returncode == 0 else ""

    # -- helpers ---------------------------------------------------------------------------
    def _search(self, title: str) -> int:
        try:
            out = self.xdotool("search", "--onlyvisible", "--name", f"^{title}$")
        except subprocess.CalledProcessError:
            return 0
        ids = [int(x) for x in out.split()]
        return ids[-1] if ids else 0

    def _wm_ready(self) -> bool:
        try:
            out = subprocess.run(["xprop", "-root", "_NET_SUPPORTING_WM_CHECK"], env=self.env,
                                 capture_output=True, timeout=10)
        except subprocess.TimeoutExpired:
            return False
        return b"window id" in out.stdout
