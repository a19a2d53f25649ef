"""Windows backend (ctypes). NOT YET RUN ON A REAL WINDOWS MACHINE.

* Window: ``GetForegroundWindow`` + ``GetWindowTextW`` + ``GetWindowThreadProcessId`` polled
  every 250 ms (a ``SetWinEventHook(EVENT_SYSTEM_FOREGROUND)`` message loop is the planned
  upgrade); the process name comes from psutil. A focused password box is detected with
  ``GetGUIThreadInfo`` → ``hwndFocus`` → ``GetWindowLongW(GWL_STYLE) & ES_PASSWORD`` on an
  ``Edit`` control (browsers do not expose this; UI Automation ``IsPassword`` is future work).
* Keys: pynput (low-level keyboard hook).
* Media: ``GetLogicalDrives`` polled every second, ``GetDriveTypeW == DRIVE_REMOVABLE``,
  ``GetVolumeInformationW`` for label and file system, ``GetDiskFreeSpaceExW`` for size;
  watchdog counts files written.

All OS calls sit in :class:`Win32`; tests replace it with a fake.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..sources import KeySource, WindowInfo
from .polling import PollingMediaSource, PollingWindowSource, Volume, watchdog_watch

__all__ = ["Win32", "WindowsMediaSource", "WindowsWindowSource", "keys", "read_window",
           "removable_volumes"]

DRIVE_REMOVABLE = 2
ES_PASSWORD = 0x0020
GWL_STYLE = -16


class Api(Protocol):
    def foreground(self) -> int: ...
    def title(self, hwnd: int) -> str: ...
    def pid(self, hwnd: int) -> int: ...
    def focused_control(self, hwnd: int) -> tuple[str, int]: ...  # (class name, style)
    def drives(self) -> int: ...  # bitmask from GetLogicalDrives
    def drive_type(self, root: str) -> int: ...
    def volume(self, root: str) -> tuple[str, str, int]: ...  # (label, fs, size)


class Win32:
    """The real calls, through ctypes.windll (imported lazily)."""

    def _u(self) -> Any:
        import ctypes

        return ctypes.windll.user32  # type: ignore[attr-defined]

    def foreground(self) -> int:
        return int(self._u().GetForegroundWindow() or 0)

    def title(self, hwnd: int) -> str:
        import ctypes

        u = self._u()
        n = u.GetWindowTextLengthW(hwnd)
        buf = ctypes.create_unicode_buffer(n + 1)
        u.GetWindowTextW(hwnd, buf, n + 1)
        return buf.value

    def pid(self, hwnd: int) -> int:
        import ctypes

        pid = ctypes.c_ulong()
        self._u().GetWindowThreadProcessId(hwnd, ctypes.byref(pid))
        return int(pid.value)

    def focused_control(self, hwnd: int) -> tuple[str, int]:
        import ctypes
        from ctypes import wintypes

        class GUITHREADINFO(ctypes.Structure):
            _fields_ = [("cbSize", wintypes.DWORD), ("flags", wintypes.DWORD),
                        ("hwndActive", wintypes.HWND), ("hwndFocus", wintypes.HWND),
                        ("hwndCapture", wintypes.HWND), ("hwndMenuOwner", wintypes.HWND),
                        ("hwndMoveSize", wintypes.HWND), ("hwndCaret", wintypes.HWND),
                        ("rcCaret", wintypes.RECT)]

        u = self._u()
        info = GUITHREADINFO(cbSize=ctypes.sizeof(GUITHREADINFO))
        tid = u.GetWindowThreadProcessId(hwnd, None)
        if not u.GetGUIThreadInfo(tid, ctypes.byref(info)) or not info.hwndFocus:
            return "", 0
        buf = ctypes.create_unicode_buffer(64)
        u.GetClassNameW(info.hwndFocus, buf, 64)
        return buf.value, int(u.GetWindowLongW(info.hwndFocus, GWL_STYLE))

    def drives(self) -> int:
        import ctypes

        return int(ctypes.windll.kernel32.GetLogicalDrives())  # type: ignore[attr-defined]

    def drive_type(self, root: str) -> int:
        import ctypes

        return int(ctypes.windll.kernel32.GetDriveTypeW(root))  # type: ignore[attr-defined]

    def volume(self, root: str) -> tuple[str, str, int]:
        import ctypes

        k = ctypes.windll.kernel32  # type: ignore[attr-defined]
        label, fs = ctypes.create_unicode_buffer(261), ctypes.create_unicode_buffer(261)
        k.GetVolumeInformationW(root, label, 261, None, None, None, fs, 261)
        total = ctypes.c_ulonglong()
        k.GetDiskFreeSpaceExW(root, None, ctypes.byref(total), None)
        return label.value, fs.value, int(total.value)


def read_window(api: Api) -> WindowInfo | None:
    hwnd = api.foreground()
    if not hwnd:
        return None
    from ..sources.window_x11 import process_name

    cls, style = api.focused_control(hwnd)
    password = cls.lower() == "edit" and bool(style & ES_PASSWORD)
    return WindowInfo(api.title(hwnd), process_name(api.pid(hwnd)), hwnd, password)


def removable_volumes(api: Api) -> dict[str, Volume]:
    mask, out = api.drives(), {}
    for i in range(26):
        if mask & (1 << i):
            root = f"{chr(65 + i)}:\\"
            if api.drive_type(root) == DRIVE_REMOVABLE:
                label, fs, size = api.volume(root)
                out[root] = Volume(root, label, fs, size)
    return out


class WindowsWindowSource(PollingWindowSource):
    def __init__(self, api: Api | None = None, interval: float = 0.25) -> None:
        self.api: Api = api or Win32()
        super().__init__(lambda: read_window(self.api), interval)


class WindowsMediaSource(PollingMediaSource):
    def __init__(self, api: Api | None = None, interval: float = 1.0) -> None:
        self.api: Api = api or Win32()
        super().__init__(lambda: removable_volumes(self.api), interval, watchdog_watch)


def keys() -> KeySource:
    from ..sources.keyboard import PynputKeySource

    return PynputKeySource()
