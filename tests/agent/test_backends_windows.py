"""The Windows backend's logic against a simulated Win32 layer that behaves as Microsoft
documents it. NOT a Windows test: nothing here has run on Windows (see README).

What is simulated, and from which documentation:
* ``GetForegroundWindow`` returns NULL while focus is changing ("can be NULL in certain
  circumstances, such as when a window is losing activation"), and HWNDs whose low 32 bits
  are significant and may arrive sign-extended (*Interprocess Communication Between 32-bit
  and 64-bit Applications*);
* ctypes' own marshalling: without ``restype``/``argtypes`` a 64-bit value is cut to a C int
  (the real ctypes, on this machine);
* ``EVENT_OBJECT_NAMECHANGE`` fires for every named object of the hooked process, not only the
  window's title (*Event Constants*: filter on ``OBJID_WINDOW``/``CHILDID_SELF``);
* ``GetDriveTypeW`` says ``DRIVE_FIXED`` for USB hard disks and many sticks; the bus type from
  ``IOCTL_STORAGE_QUERY_PROPERTY`` tells them apart; an empty card reader has no volume.
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from agent.backends import win32, windows
from agent.backends.polling import Volume
from agent.sources import MediaEvent, WindowInfo

SIGN_EXTENDED = 0xFFFFFFFF80001234  # a window handle with bit 31 set, as 64-bit code sees it


def test_handle_has_one_form_whether_null_truncated_or_sign_extended() -> None:
    assert windows.handle(None) == 0 and windows.handle(0) == 0
    assert windows.handle(0x80001234) == SIGN_EXTENDED            # c_uint / DWORD
    assert windows.handle(-0x7FFFEDCC) == SIGN_EXTENDED           # c_int (ctypes default)
    assert windows.handle(SIGN_EXTENDED) == SIGN_EXTENDED         # c_void_p
    assert windows.handle(0x000A0B2C) == 0x000A0B2C


def test_declared_prototypes_keep_handles_that_ctypes_defaults_mangle() -> None:
    """A fake GetForegroundWindow with a real C ABI (a ctypes thunk returning 64 bits)."""
    thunk_type = ctypes.CFUNCTYPE(ctypes.c_uint64)
    keep = thunk_type(lambda: SIGN_EXTENDED)
    as_default = ctypes.cast(keep, ctypes.CFUNCTYPE(ctypes.c_int))  # no restype declared
    assert as_default() != SIGN_EXTENDED  # what the old, undeclared code received
    restype, argtypes = win32.prototypes()["user32"]["GetForegroundWindow"]
    declared = ctypes.cast(keep, ctypes.CFUNCTYPE(restype, *argtypes))
    assert windows.handle(declared()) == SIGN_EXTENDED
    null = ctypes.cast(thunk_type(lambda: 0), ctypes.CFUNCTYPE(restype, *argtypes))
    assert null() is None and windows.handle(null()) == 0  # c_void_p: NULL is None

    # argtypes: an HWND parameter carries the full 64 bits; undeclared, ctypes cuts it to int
    seen: list[int] = []
    sink = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint64)(lambda h: seen.append(h) or 0)
    _, length_args = win32.prototypes()["user32"]["GetWindowTextLengthW"]
    ctypes.cast(sink, ctypes.CFUNCTYPE(ctypes.c_int, *length_args))(SIGN_EXTENDED)
    assert seen == [SIGN_EXTENDED]


def test_every_win32_call_is_declared_and_loaded_with_use_last_error() -> None:
    source = Path(win32.__file__).read_text()
    used = set(re.findall(r"self\.[uk]\.(\w+)\(", source))
    table = win32.prototypes()
    declared = set(table["user32"]) | set(table["kernel32"])
    assert used and used <= declared, used - declared

    class Lib:
        def __init__(self) -> None:
            self.funcs: dict[str, Any] = {}

        def __getattr__(self, name: str) -> Any:
            fn = self.funcs.setdefault(name, type("Fn", (), {})())
            return fn

    libs: dict[str, Lib] = {}
    win32.Win32(load=lambda name: libs.setdefault(name, Lib()))
    for dll, funcs in table.items():
        for name, (restype, argtypes) in funcs.items():
            fn = libs[dll].funcs[name]
            assert fn.restype is restype and fn.argtypes == argtypes, name
    assert "use_last_error=True" in source


class FakeWindows:
    """Windows as Microsoft documents it, minus Windows."""

    def __init__(self) -> None:
        self.fg: int | None = None
        self.windows: dict[int, tuple[str, int]] = {}  # hwnd -> (title, pid)
        self.names_hooked: list[int] = []
        self.fail_next: BaseException | None = None
        self.events: list[tuple[str, int, int, int]] = []

    def foreground(self) -> int:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        return windows.handle(self.fg)

    def title(self, hwnd: int) -> str:
        return self.windows[windows.handle(hwnd)][0]

    def pid(self, hwnd: int) -> int:
        return self.windows[windows.handle(hwnd)][1]

    def process_name(self, pid: int) -> str:
        return {10: "msedge.exe", 20: "WhatsApp.exe"}.get(pid, "")

    def focused_control(self, hwnd: int) -> tuple[str, int]:
        return "", 0

    def rect(self, hwnd: int) -> tuple[int, int, int, int] | None:
        return 0, 0, 800, 600

    def hook_names(self, pid: int) -> None:
        self.names_hooked.append(pid)

    def run_window_events(self, on_event: Callable[[str, int, int, int], bool],
                          stop: threading.Event, tick_seconds: float) -> None:
        on_event("tick", 0, 0, 0)
        for ev in self.events:
            if ev[0] == "switch":
                self.fg = ev[1]
                ev = ("foreground", ev[1], 0, 0)
            elif ev[0] == "retitle":
                title, pid = self.windows[windows.handle(ev[1])]
                self.windows[windows.handle(ev[1])] = (f"(3) {title}", pid)
                ev = ("namechange", ev[1], 0, 0)
            if not on_event(*ev):
                return


def test_foreground_and_title_events_with_null_and_sign_extended_handles() -> None:
    api = FakeWindows()
    api.windows = {SIGN_EXTENDED: ("Inbox - Edge", 10), 0x2002: ("WhatsApp", 20)}
    api.events = [
        ("switch", 0x80001234, 0, 0),       # arrives truncated (32-bit form): same window
        ("namechange", SIGN_EXTENDED, 4, 7),  # a control inside Edge renamed: not the title
        ("switch", 0, 0, 0),                # NULL while activation moves
        ("switch", 0x2002, 0, 0),
        ("retitle", 0x2002, 0, 0),          # the title itself: reported
        ("namechange", SIGN_EXTENDED, 0, 0),  # a background window: ignored
    ]
    got: list[WindowInfo] = []
    windows.WindowsWindowSource(api).run(got.append, threading.Event())
    assert [(w.title, w.process, w.window_id) for w in got] == [
        ("Inbox - Edge", "msedge.exe", SIGN_EXTENDED),
        ("WhatsApp", "WhatsApp.exe", 0x2002),
        ("(3) WhatsApp", "WhatsApp.exe", 0x2002)]
    assert api.names_hooked == [10, 20, 0]  # re-hooked to each foreground process, then off


def test_an_exception_in_a_read_is_reported_not_fatal_until_it_keeps_failing() -> None:
    api = FakeWindows()
    api.windows = {0x10: ("Docs", 10)}
    api.fail_next = ctypes.ArgumentError("argument 1: OverflowError: int too long to convert")
    api.events = [("switch", 0x10, 0, 0)]
    got: list[WindowInfo] = []
    windows.WindowsWindowSource(api).run(got.append, threading.Event())
    assert [w.title for w in got] == ["Docs"]  # the ArgumentError did not end the thread

    class Broken(FakeWindows):
        def foreground(self) -> int:
            raise ctypes.ArgumentError("argument 1: wrong type")

    broken = Broken()
    broken.events = [("foreground", 1, 0, 0)] * 10
    with pytest.raises(RuntimeError, match="failed 5 times"):
        windows.WindowsWindowSource(broken, max_errors=5).run(got.append, threading.Event())


class FakeDrives:
    """C: NVMe, D: USB hard disk (DRIVE_FIXED), E: USB stick reporting DRIVE_FIXED,
    F: empty SD reader (DRIVE_REMOVABLE, no volume), G: SD card, Z: network share."""

    TYPES: ClassVar[dict[str, tuple[int, int | None]]] = {
        "C": (3, 0x11), "D": (3, 0x7), "E": (3, 0x7), "F": (2, 0xC), "G": (2, 0xC),
        "Z": (4, None)}

    def __init__(self) -> None:
        self.present = set(self.TYPES)
        self.device_events: list[tuple[str, int]] = []

    def drives(self) -> int:
        return sum(1 << (ord(d) - 65) for d in self.present)

    def drive_type(self, root: str) -> int:
        return self.TYPES[root[0]][0]

    def bus_type(self, root: str) -> int | None:
        return self.TYPES[root[0]][1]

    def volume(self, root: str) -> tuple[str, str, int, int] | None:
        if root[0] == "F":
            return None  # ERROR_NOT_READY: no disk in the drive
        return f"VOL{root[0]}", "exFAT", 1 << 30, 0xC0FFEE


def test_usb_disks_reporting_drive_fixed_are_removable_and_empty_readers_are_not() -> None:
    vols = windows.removable_volumes(FakeDrives())  # type: ignore[arg-type]
    assert sorted(vols) == ["D:\\", "E:\\", "G:\\"]
    assert vols["E:\\"] == Volume("E:\\", "VOLE", "exFAT", 1 << 30, "00C0FFEE")


def test_device_change_rescans_at_once_and_query_remove_closes_the_watcher() -> None:
    api = FakeDrives()
    api.present = {"C"}
    stop, events = threading.Event(), []
    released: list[str] = []

    def watch(mp: str, on_file: Callable[[str], None]) -> Callable[[], None]:
        return lambda: released.append(mp)

    source = windows.WindowsMediaSource(api, interval=3600)  # type: ignore[arg-type]
    source.watch = watch
    plugged, scanned = threading.Event(), threading.Event()
    drives = api.drives

    def drives_then_tell() -> int:
        mask = drives()
        scanned.set()
        return mask

    api.drives = drives_then_tell  # type: ignore[method-assign]

    def run_device_events(on_event: Callable[[str, int], None], stop_: threading.Event) -> None:
        scanned.wait(10)  # the stick goes in after the agent's first scan
        api.present.add("E")
        on_event("arrival", 1 << 4)           # WM_DEVICECHANGE, DBT_DEVICEARRIVAL, E:
        plugged.wait(10)
        on_event("query_remove", 1 << 4)      # "Safely Remove": our handle must go now
        assert released == ["E:\\"]
        api.present.discard("E")
        on_event("removed", 1 << 4)

    api.run_device_events = run_device_events  # type: ignore[attr-defined]

    def on_event(ev: MediaEvent) -> None:
        events.append(ev)
        if ev.event == "mounted":
            plugged.set()
        if ev.event == "unmounted":
            stop.set()
            source.wake.set()  # type: ignore[union-attr]

    runner = threading.Thread(target=source.run, args=(on_event, stop))
    runner.start()
    runner.join(20)
    assert not runner.is_alive(), "the scan waited for the hour-long poll, not the event"
    assert [(e.event, e.mount_point) for e in events] == [("mounted", "E:\\"),
                                                           ("unmounted", "E:\\")]
    assert released == ["E:\\"]  # stopped once, at the query-remove
