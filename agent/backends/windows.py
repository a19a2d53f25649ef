"""Windows backend: the logic, over a small seam (:class:`Api`). NOT YET RUN ON REAL WINDOWS.

The ctypes calls live in :mod:`agent.backends.win32` (every function declared with
``argtypes``/``restype`` from ``ctypes.wintypes``, ``WinDLL(..., use_last_error=True)``);
tests drive this module with a fake :class:`Api` that behaves as Microsoft documents.

* Window: event-driven. ``SetWinEventHook(EVENT_SYSTEM_FOREGROUND)`` (out of context, on a
  thread with a message loop) reports every foreground change; a second hook,
  ``EVENT_OBJECT_NAMECHANGE`` limited to the foreground window's process, reports its title
  changes (only ``OBJID_WINDOW``/``CHILDID_SELF`` of the foreground window count: every
  control in the process fires it). A slow timer re-reads as a safety net. Handles are
  normalised (:func:`handle`): NULL arrives as ``None`` through a ``c_void_p`` restype, and a
  handle may arrive sign-extended or truncated (only the low 32 bits are significant).
* Password box: ``GetGUIThreadInfo`` → ``hwndFocus`` → class ``Edit`` with ``ES_PASSWORD``
  (classic controls only). Browsers, WebView2, UWP, WPF and Electron are covered by
  :func:`fields`: UI Automation's focus-changed events and ``IsPassword``
  (:mod:`agent.sources.a11y_windows`), on their own thread.
* Media: ``GetLogicalDrives``; a drive counts when ``GetDriveTypeW`` is ``DRIVE_REMOVABLE``, or
  ``DRIVE_FIXED`` on a USB/SD/MMC/1394 bus (``IOCTL_STORAGE_QUERY_PROPERTY`` →
  ``STORAGE_DEVICE_DESCRIPTOR.BusType``: USB hard disks and many sticks report
  ``DRIVE_FIXED``). An empty card reader (no volume) is skipped; ``SEM_FAILCRITICALERRORS``
  keeps it from raising "No disk" dialogs. ``WM_DEVICECHANGE`` (``DBT_DEVICEARRIVAL``,
  ``DBT_DEVICEREMOVECOMPLETE`` for ``DBT_DEVTYP_VOLUME``) wakes the scan at once; a
  ``DBT_DEVICEQUERYREMOVE`` closes that volume's file watcher so "Safely Remove" is not blocked.
* Keys: pynput's low-level hook, wrapped in :class:`~agent.backends.hookwatch.WatchedKeySource`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from ..sources import FieldSource, KeySource, MediaEvent, WindowInfo
from .polling import PollingMediaSource, Volume, watchdog_watch

__all__ = ["BUS_REMOVABLE", "DRIVE_FIXED", "DRIVE_REMOVABLE", "ES_PASSWORD", "Api",
           "ForegroundTracker", "WindowsMediaSource", "WindowsWindowSource", "fields", "handle",
           "keys", "read_window", "removable_volumes"]

log = logging.getLogger(__name__)

DRIVE_REMOVABLE = 2
DRIVE_FIXED = 3
ES_PASSWORD = 0x0020
GWL_STYLE = -16
OBJID_WINDOW = 0
CHILDID_SELF = 0
#: STORAGE_BUS_TYPE values of buses that carry removable storage: 1394, USB, SD, MMC.
BUS_REMOVABLE = frozenset({0x4, 0x7, 0xC, 0xD})

_MASK32, _MASK64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF


def handle(value: int | None) -> int:
    """One canonical form for a window handle: 0 for NULL (``c_void_p`` gives ``None``), and
    the low 32 bits sign-extended to 64 as an unsigned value, because "only the lower 32 bits
    are significant, so it is safe to truncate the handle ... or sign-extend" it (Microsoft,
    *Interprocess Communication Between 32-bit and 64-bit Applications*). So 0x80001234,
    -0x7FFFEDCC and 0xFFFFFFFF80001234 are the same window."""
    if not value:
        return 0
    low = value & _MASK32
    return (low | (_MASK64 ^ _MASK32)) if low & 0x80000000 else low


class Api(Protocol):
    def foreground(self) -> int: ...  # GetForegroundWindow, normalised (0: none)
    def title(self, hwnd: int) -> str: ...
    def pid(self, hwnd: int) -> int: ...
    def process_name(self, pid: int) -> str: ...
    def focused_control(self, hwnd: int) -> tuple[str, int]: ...  # (class name, style)
    def rect(self, hwnd: int) -> tuple[int, int, int, int] | None: ...  # left, top, w, h
    def drives(self) -> int: ...  # bitmask from GetLogicalDrives
    def drive_type(self, root: str) -> int: ...
    def bus_type(self, root: str) -> int | None: ...  # STORAGE_BUS_TYPE; None: unknown
    def volume(self, root: str) -> tuple[str, str, int, int] | None: ...  # label, fs, size,
    # serial; None when no volume is mounted there (an empty card reader)

    def run_window_events(self, on_event: Callable[[str, int, int, int], bool],
                          stop: threading.Event, tick_seconds: float) -> None:
        """Pump a message loop with the foreground hook installed; call
        ``on_event(kind, hwnd, id_object, id_child)`` for "foreground", "namechange" and
        "tick" (every *tick_seconds*) on the loop's thread, until *stop* is set or
        ``on_event`` returns False."""

    def hook_names(self, pid: int) -> None:
        """(On the loop's thread.) Report EVENT_OBJECT_NAMECHANGE for process *pid* only,
        replacing the previous process's hook; 0 removes it."""

    def run_device_events(self, on_event: Callable[[str, int], None],
                          stop: threading.Event) -> None:
        """Pump a hidden window's WM_DEVICECHANGE: ``on_event(kind, unit_mask)`` with kind
        "arrival", "removed" or "query_remove", until *stop* is set."""


def read_window(api: Api) -> WindowInfo | None:
    hwnd = handle(api.foreground())
    if not hwnd:
        return None  # no foreground window (the desktop, a switch in progress, a UAC prompt)
    cls, style = api.focused_control(hwnd)
    password = cls.lower() == "edit" and bool(style & ES_PASSWORD)
    pid = api.pid(hwnd)
    return WindowInfo(api.title(hwnd), api.process_name(pid) if pid else "", hwnd, password)


class ForegroundTracker:
    """Decides, per WinEvent, whether to re-read the window; re-hooks name changes to the
    foreground process. Runs on the message-loop thread."""

    def __init__(self, api: Api, on_change: Callable[[WindowInfo], None]) -> None:
        self.api, self.on_change = api, on_change
        self.foreground = 0
        self.pid = 0
        self.last: WindowInfo | None = None
        self.errors = 0

    def on_event(self, kind: str, hwnd: int, id_object: int = 0, id_child: int = 0) -> None:
        hwnd = handle(hwnd)
        if kind == "namechange" and (hwnd != self.foreground or id_object != OBJID_WINDOW
                                     or id_child != CHILDID_SELF):
            return  # a control's name, or another window: not the title we report
        try:
            info = read_window(self.api)
            if info is not None and info.window_id != self.foreground:
                self.foreground = info.window_id
                pid = self.api.pid(info.window_id)
                if pid != self.pid:
                    self.pid = pid
                    self.api.hook_names(pid)
        except Exception as exc:  # never let an exception unwind into the WinEvent callback
            self.errors += 1
            log.warning("reading the foreground window failed: %s: %s",
                        type(exc).__name__, exc)
            return
        self.errors = 0
        if info is not None and info != self.last:
            self.last = info
            self.on_change(info)


class WindowsWindowSource:
    """Foreground window and title through WinEvent hooks (see module docstring)."""

    def __init__(self, api: Api | None = None, tick_seconds: float = 2.0,
                 max_errors: int = 50) -> None:
        self._api = api
        self.tick_seconds, self.max_errors = tick_seconds, max_errors

    @property
    def api(self) -> Api:
        if self._api is None:
            from .win32 import Win32

            self._api = Win32()
        return self._api

    def focused_rect(self) -> tuple[int, int, int, int] | None:
        """The foreground window's rectangle, for window-only screenshots."""
        hwnd = handle(self.api.foreground())
        return self.api.rect(hwnd) if hwnd else None

    def run(self, on_change: Callable[[WindowInfo], None], stop: threading.Event) -> None:
        api = self.api
        tracker = ForegroundTracker(api, on_change)

        def on_event(kind: str, hwnd: int, id_object: int, id_child: int) -> bool:
            tracker.on_event(kind, hwnd, id_object, id_child)
            return tracker.errors < self.max_errors  # False ends the message loop

        try:
            api.run_window_events(on_event, stop, self.tick_seconds)
        finally:
            api.hook_names(0)
        if tracker.errors >= self.max_errors and not stop.is_set():
            raise RuntimeError(f"reading the foreground window failed {tracker.errors} "
                               "times in a row")


def removable_volumes(api: Api) -> dict[str, Volume]:
    mask, out = api.drives(), {}
    for i in range(26):
        if not mask & (1 << i):
            continue
        root = f"{chr(65 + i)}:\\"
        kind = api.drive_type(root)
        if kind == DRIVE_FIXED:
            if api.bus_type(root) not in BUS_REMOVABLE:
                continue  # an internal disk (SATA, NVMe, RAID): not removable media
        elif kind != DRIVE_REMOVABLE:
            continue
        vol = api.volume(root)
        if vol is None:
            continue  # a card reader or floppy drive with nothing in it
        label, fs, size, serial = vol
        out[root] = Volume(root, label, fs, size, f"{serial:08X}" if serial else "")
    return out


class WindowsMediaSource(PollingMediaSource):
    """Drive letters, re-scanned at once on WM_DEVICECHANGE and every *interval* seconds."""

    def __init__(self, api: Api | None = None, interval: float = 5.0,
                 events: bool = True) -> None:
        self._api = api
        self.events = events
        super().__init__(lambda: removable_volumes(self.api), interval, watchdog_watch,
                         wake=threading.Event())

    @property
    def api(self) -> Api:
        if self._api is None:
            from .win32 import Win32

            self._api = Win32()
        return self._api

    def on_device(self, kind: str, unit_mask: int) -> None:
        """A WM_DEVICECHANGE volume event (on the hidden window's thread)."""
        if kind == "query_remove":
            for i in range(26):
                if unit_mask & (1 << i):
                    self.release(f"{chr(65 + i)}:\\")
        if self.wake is not None:
            self.wake.set()

    def run(self, on_event: Callable[[MediaEvent], None], stop: threading.Event) -> None:
        pump: threading.Thread | None = None
        if self.events:
            pump = threading.Thread(target=self.api.run_device_events,
                                    args=(self.on_device, stop), name="media-devchange",
                                    daemon=True)
            pump.start()
        try:
            super().run(on_event, stop)
        finally:
            if pump is not None:
                pump.join(timeout=5)


def fields() -> FieldSource:
    """Password fields in every toolkit: UI Automation's focused element and IsPassword."""
    from ..sources.a11y_windows import UiaFieldSource

    return UiaFieldSource()


def keys() -> KeySource:
    from ..sources.keyboard import PynputKeySource
    from .hookwatch import WatchedKeySource, windows_hook_timeout

    return WatchedKeySource(PynputKeySource(), windows_hook_timeout)  # read when it runs
