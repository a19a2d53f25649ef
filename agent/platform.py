"""The one place that chooses the OS backend (ActivityWatch's aw_watcher_window/lib.py model).

Each backend implements the Protocols in ``agent.sources`` and imports its OS libraries only
inside functions, so importing this module (or any backend module) does nothing to the OS.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from .config import Config
from .sources import KeySource, MediaSource, SelectionReader, WindowSource

__all__ = ["Backends", "backend_name", "select_backends"]


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
        from .sources.input_x11 import X11InputSource
        from .sources.media_linux import LinuxMediaSource
        from .sources.selection_x11 import X11SelectionReader
        from .sources.window_x11 import X11WindowSource, focused_window_rect

        media = LinuxMediaSource(tuple(config.media_roots))
        if name == "x11":
            return Backends(name, X11WindowSource(), X11InputSource(), media,
                            X11SelectionReader(max_chars=config.paste_max_chars),
                            focused_window_rect)
        # Wayland gives no global window or key access to ordinary clients: media only.
        return Backends(name, None, None, media)
    if name == "windows":
        from .backends import windows

        return Backends(name, windows.WindowsWindowSource(), windows.keys(),
                        windows.WindowsMediaSource())
    if name == "macos":
        from .backends import macos

        return Backends(name, macos.MacWindowSource(), macos.keys(), macos.MacMediaSource())
    return Backends(name, None, None, None)
