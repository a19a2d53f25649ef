"""macOS backend (pyobjc). NOT YET RUN ON A REAL MAC.

* Window: ``NSWorkspace.sharedWorkspace().frontmostApplication()`` for the process, and
  ``CGWindowListCopyWindowInfo`` for the front window's title (needs the Screen Recording
  permission on macOS 10.15+; without it the title is empty and only the app name is
  reported), polled every 250 ms. NSWorkspace notifications are the planned upgrade.
* Keys: pynput (needs the Input Monitoring permission).
* Media: ``/Volumes`` polled every second (the boot volume, a symlink to /, is skipped);
  file system and size from psutil; watchdog (FSEvents) counts files written.

All OS calls sit in :class:`Cocoa`; tests replace it with a fake.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from ..sources import KeySource, WindowInfo
from .polling import PollingMediaSource, PollingWindowSource, Volume, watchdog_watch

__all__ = ["Cocoa", "MacMediaSource", "MacWindowSource", "keys", "read_window",
           "removable_volumes"]


class Api(Protocol):
    def frontmost(self) -> tuple[int, str]: ...  # (pid, application name)
    def window_title(self, pid: int) -> str: ...
    def volumes(self) -> list[tuple[str, bool]]: ...  # (path, is a symlink)
    def volume_info(self, path: str) -> tuple[str, int]: ...  # (fstype, size)


class Cocoa:
    def frontmost(self) -> tuple[int, str]:
        from AppKit import NSWorkspace

        app = NSWorkspace.sharedWorkspace().frontmostApplication()
        if app is None:
            return 0, ""
        return int(app.processIdentifier()), str(app.localizedName() or "")

    def window_title(self, pid: int) -> str:
        import Quartz

        infos: Any = Quartz.CGWindowListCopyWindowInfo(
            Quartz.kCGWindowListOptionOnScreenOnly | Quartz.kCGWindowListExcludeDesktopElements,
            Quartz.kCGNullWindowID)
        for w in infos or ():
            if int(w.get("kCGWindowOwnerPID", -1)) == pid and w.get("kCGWindowLayer", 1) == 0:
                return str(w.get("kCGWindowName") or "")
        return ""

    def volumes(self) -> list[tuple[str, bool]]:
        root = Path("/Volumes")
        return [(str(p), p.is_symlink()) for p in root.iterdir()] if root.is_dir() else []

    def volume_info(self, path: str) -> tuple[str, int]:
        import shutil

        import psutil

        fs = next((p.fstype for p in psutil.disk_partitions() if p.mountpoint == path), "")
        try:
            return fs, shutil.disk_usage(path).total
        except OSError:
            return fs, 0


def read_window(api: Api) -> WindowInfo | None:
    pid, app = api.frontmost()
    if not pid:
        return None
    return WindowInfo(api.window_title(pid), app, pid)


def removable_volumes(api: Api) -> dict[str, Volume]:
    out = {}
    for path, is_link in api.volumes():
        if is_link:
            continue  # "Macintosh HD" -> /
        fs, size = api.volume_info(path)
        out[path] = Volume(path, os.path.basename(path), fs, size)
    return out


class MacWindowSource(PollingWindowSource):
    def __init__(self, api: Api | None = None, interval: float = 0.25) -> None:
        self.api: Api = api or Cocoa()
        super().__init__(lambda: read_window(self.api), interval)


class MacMediaSource(PollingMediaSource):
    def __init__(self, api: Api | None = None, interval: float = 1.0) -> None:
        self.api: Api = api or Cocoa()
        super().__init__(lambda: removable_volumes(self.api), interval, watchdog_watch)


def keys() -> KeySource:
    from ..sources.keyboard import PynputKeySource

    return PynputKeySource()
