"""The one place that chooses the OS backend (ActivityWatch's aw_watcher_window/lib.py model).

Each backend implements the Protocols in ``agent.sources`` and imports its OS libraries only
inside functions, so importing this module (or any backend module) does nothing to the OS.
It also decides which thread the agent's asyncio loop runs on (:func:`run_agent`): on macOS
the main thread must turn the Cocoa run loop (``agent.backends.mainloop``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from .config import Config
from .sources import FieldSource, KeySource, MediaSource, SelectionReader, WindowSource

__all__ = ["Backends", "backend_name", "guarded_screenshot", "run_agent", "select_backends"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backends:
    name: str
    window: WindowSource | None
    keys: KeySource | None
    media: MediaSource | None
    #: Reads the clipboard/primary selection at the moment of a paste (None: not available).
    selection: SelectionReader | None = None
    #: The focused window's rectangle on screen, for window-only screenshots.
    focused_rect: Callable[[], tuple[int, int, int, int] | None] | None = None
    #: Why a screenshot would be useless right now ("" when it would not), e.g. macOS without
    #: Screen Recording returns only the wallpaper.
    screenshot_blocked: Callable[[], str] | None = None
    #: Says which kind of field has keyboard focus (password or not), e.g. AT-SPI on Linux.
    fields: FieldSource | None = None


def guarded_screenshot(grab: Callable[[], bytes],
                       blocked: Callable[[], str]) -> Callable[[], bytes]:
    """*grab*, unless *blocked* names a reason: then no image, and the reason is logged
    (once per reason) instead of storing a picture of the wallpaper as evidence."""
    said: set[str] = set()

    def shot() -> bytes:
        reason = blocked()
        if not reason:
            return grab()
        if reason not in said:
            said.add(reason)
            log.warning("screenshot not taken: %s", reason)
        return b""

    return shot


def run_agent(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
              name: str | None = None) -> None:
    """Run the agent's async main until SIGINT/SIGTERM. On macOS the main thread turns the
    Cocoa run loop (NSWorkspace notifications need it) and asyncio runs in a worker."""
    from .backends.mainloop import run_agent as run

    if (name or backend_name()) == "macos":
        from .backends.cocoa import Cocoa

        run(main, Cocoa.shared())
    else:
        run(main)


def backend_name(platform: str | None = None, env: dict[str, str] | None = None) -> str:
    """"x11", "wayland", "windows", "macos" or "unsupported" for this session."""
    platform = platform or sys.platform
    env = dict(os.environ) if env is None else env
    if platform.startswith("win"):
        return "windows"
    if platform == "darwin":
        return "macos"
    if platform.startswith("linux"):
        if env.get("DISPLAY"):
            return "x11"
        if env.get("WAYLAND_DISPLAY"):
            return "wayland"
        return "headless"
    return "unsupported"


def select_backends(config: Config, name: str | None = None) -> Backends:
    """Build the window, key and media sources for this OS (None where not available)."""
    name = name or backend_name()
    if name in ("x11", "wayland", "headless"):
        from .sources.a11y_linux import AtspiFieldSource
        from .sources.input_x11 import X11InputSource
        from .sources.media_linux import LinuxMediaSource
        from .sources.selection_x11 import X11SelectionReader
        from .sources.window_x11 import X11WindowSource, focused_window_rect

        media = LinuxMediaSource(tuple(config.media_roots))
        if name == "x11":
            return Backends(name, X11WindowSource(), X11InputSource(), media,
                            X11SelectionReader(max_chars=config.paste_max_chars),
                            focused_window_rect, fields=AtspiFieldSource())
        # Wayland gives no global window or key access to ordinary clients: media only.
        return Backends(name, None, None, media)
    if name == "windows":
        from .backends import windows

        win = windows.WindowsWindowSource()
        return Backends(name, win, windows.keys(), windows.WindowsMediaSource(),
                        focused_rect=win.focused_rect, fields=windows.fields())
    if name == "macos":
        from .backends import macos

        mac = macos.MacWindowSource()
        return Backends(name, mac, macos.keys(), macos.MacMediaSource(),
                        focused_rect=mac.focused_rect,
                        screenshot_blocked=lambda: macos.screenshot_blocked(mac.api),
                        fields=macos.fields())
    return Backends(name, None, None, None)
