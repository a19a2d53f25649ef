"""The Win32 calls behind :class:`agent.backends.windows.Api`. NOT YET RUN ON REAL WINDOWS.

Every function is loaded from ``WinDLL(name, use_last_error=True)`` and declared with
``argtypes``/``restype`` from ``ctypes.wintypes`` (:func:`prototypes`). Without them ctypes
passes and returns a C ``int``: a 64-bit handle is silently truncated, ``GetForegroundWindow``
comes back sign-extended from 32 bits, and an out-of-range value raises ``ArgumentError``.
``HWND`` is ``c_void_p``, so NULL comes back as ``None``; :func:`~agent.backends.windows.handle`
turns every handle into one canonical int. Nothing here runs at import time.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from typing import Any

from .windows import handle

__all__ = ["Win32", "bind", "prototypes"]

log = logging.getLogger(__name__)

EVENT_SYSTEM_FOREGROUND = 0x0003
EVENT_OBJECT_NAMECHANGE = 0x800C
WINEVENT_OUTOFCONTEXT = 0x0000
WINEVENT_SKIPOWNPROCESS = 0x0002
WM_QUIT, WM_TIMER, WM_DEVICECHANGE = 0x0012, 0x0113, 0x0219
DBT_DEVICEARRIVAL, DBT_DEVICEQUERYREMOVE, DBT_DEVICEREMOVECOMPLETE = 0x8000, 0x8001, 0x8004
DBT_DEVTYP_VOLUME = 0x0002
PM_NOREMOVE = 0x0000
GWL_STYLE = -16
SEM_FAILCRITICALERRORS, SEM_NOOPENFILEERRORBOX = 0x0001, 0x8000
FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING = 0x1, 0x2, 3
IOCTL_STORAGE_QUERY_PROPERTY = 0x002D1400


def _types() -> dict[str, Any]:
    from ctypes import wintypes as w

    functype = getattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE)  # CFUNCTYPE: tests on Linux
    lresult = ctypes.c_ssize_t
    return {
        "w": w, "LRESULT": lresult, "UINT_PTR": ctypes.c_size_t,
        "WINEVENTPROC": functype(None, w.HANDLE, w.DWORD, w.HWND, w.LONG, w.LONG, w.DWORD,
                                 w.DWORD),
        "WNDPROC": functype(lresult, w.HWND, w.UINT, w.WPARAM, w.LPARAM),
    }


def prototypes() -> dict[str, dict[str, tuple[Any, list[Any]]]]:
    """{dll: {function: (restype, argtypes)}} for every call this module makes."""
    t = _types()
    w, c = t["w"], ctypes
    msg = c.POINTER(w.MSG)
    return {
        "user32": {
            "GetForegroundWindow": (w.HWND, []),
            "GetWindowTextLengthW": (c.c_int, [w.HWND]),
            "GetWindowTextW": (c.c_int, [w.HWND, w.LPWSTR, c.c_int]),
            "GetWindowThreadProcessId": (w.DWORD, [w.HWND, c.POINTER(w.DWORD)]),
            "GetGUIThreadInfo": (w.BOOL, [w.DWORD, c.c_void_p]),
            "GetClassNameW": (c.c_int, [w.HWND, w.LPWSTR, c.c_int]),
            "GetWindowLongW": (w.LONG, [w.HWND, c.c_int]),
            "GetWindowRect": (w.BOOL, [w.HWND, c.POINTER(w.RECT)]),
            "SetWinEventHook": (w.HANDLE, [w.DWORD, w.DWORD, w.HMODULE, t["WINEVENTPROC"],
                                           w.DWORD, w.DWORD, w.DWORD]),
            "UnhookWinEvent": (w.BOOL, [w.HANDLE]),
            "PeekMessageW": (w.BOOL, [msg, w.HWND, w.UINT, w.UINT, w.UINT]),
            "GetMessageW": (w.BOOL, [msg, w.HWND, w.UINT, w.UINT]),
            "TranslateMessage": (w.BOOL, [msg]),
            "DispatchMessageW": (t["LRESULT"], [msg]),
            "PostThreadMessageW": (w.BOOL, [w.DWORD, w.UINT, w.WPARAM, w.LPARAM]),
            "SetTimer": (t["UINT_PTR"], [w.HWND, t["UINT_PTR"], w.UINT, c.c_void_p]),
            "KillTimer": (w.BOOL, [w.HWND, t["UINT_PTR"]]),
            "RegisterClassW": (w.ATOM, [c.c_void_p]),
            "UnregisterClassW": (w.BOOL, [w.LPCWSTR, w.HINSTANCE]),
            "CreateWindowExW": (w.HWND, [w.DWORD, w.LPCWSTR, w.LPCWSTR, w.DWORD, c.c_int,
                                         c.c_int, c.c_int, c.c_int, w.HWND, w.HMENU,
                                         w.HINSTANCE, w.LPVOID]),
            "DestroyWindow": (w.BOOL, [w.HWND]),
            "DefWindowProcW": (t["LRESULT"], [w.HWND, w.UINT, w.WPARAM, w.LPARAM]),
        },
        "kernel32": {
            "GetCurrentThreadId": (w.DWORD, []),
            "GetModuleHandleW": (w.HMODULE, [w.LPCWSTR]),
            "GetLogicalDrives": (w.DWORD, []),
            "GetDriveTypeW": (w.UINT, [w.LPCWSTR]),
            "GetVolumeInformationW": (w.BOOL, [w.LPCWSTR, w.LPWSTR, w.DWORD,
                                               c.POINTER(w.DWORD), c.POINTER(w.DWORD),
                                               c.POINTER(w.DWORD), w.LPWSTR, w.DWORD]),
            "GetDiskFreeSpaceExW": (w.BOOL, [w.LPCWSTR, c.POINTER(c.c_ulonglong),
                                             c.POINTER(c.c_ulonglong),
                                             c.POINTER(c.c_ulonglong)]),
            "CreateFileW": (w.HANDLE, [w.LPCWSTR, w.DWORD, w.DWORD, c.c_void_p, w.DWORD,
                                       w.DWORD, w.HANDLE]),
            "DeviceIoControl": (w.BOOL, [w.HANDLE, w.DWORD, c.c_void_p, w.DWORD, c.c_void_p,
                                         w.DWORD, c.POINTER(w.DWORD), c.c_void_p]),
            "CloseHandle": (w.BOOL, [w.HANDLE]),
            "SetThreadErrorMode": (w.BOOL, [w.DWORD, c.POINTER(w.DWORD)]),
        },
    }


def bind(load: Callable[[str], Any],
         table: dict[str, dict[str, tuple[Any, list[Any]]]] | None = None) -> dict[str, Any]:
    """Load each DLL of *table* (default: this module's :func:`prototypes`) with *load* and
    declare every function's prototype on it."""
    libs = {}
    for dll, funcs in (prototypes() if table is None else table).items():
        lib = load(dll)
        for name, (restype, argtypes) in funcs.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        libs[dll] = lib
    return libs


def _windll(name: str) -> Any:
    return ctypes.WinDLL(name, use_last_error=True)  # type: ignore[attr-defined, unused-ignore]


class Win32:
    """The real calls (see :class:`agent.backends.windows.Api` for what each returns)."""

    def __init__(self, load: Callable[[str], Any] = _windll) -> None:
        libs = bind(load)
        self.u, self.k = libs["user32"], libs["kernel32"]
        self._t = _types()
        self._names_hook: Any = None
        self._callbacks: list[Any] = []  # ctypes callbacks must outlive their registration

    # -- windows -----------------------------------------------------------------------
    def foreground(self) -> int:
        return handle(self.u.GetForegroundWindow())

    def title(self, hwnd: int) -> str:
        n = self.u.GetWindowTextLengthW(hwnd)
        if n <= 0:
            return ""
        buf = ctypes.create_unicode_buffer(n + 1)
        self.u.GetWindowTextW(hwnd, buf, n + 1)
        return buf.value

    def pid(self, hwnd: int) -> int:
        w = self._t["w"]
        pid = w.DWORD(0)
        self.u.GetWindowThreadProcessId(hwnd, ctypes.byref(pid))
        return int(pid.value)

    def process_name(self, pid: int) -> str:
        import psutil

        try:
            return str(psutil.Process(pid).name())
        except (psutil.Error, OSError):
            return ""

    def focused_control(self, hwnd: int) -> tuple[str, int]:
        w = self._t["w"]

        class GUITHREADINFO(ctypes.Structure):
            _fields_ = [("cbSize", w.DWORD), ("flags", w.DWORD),
                        ("hwndActive", w.HWND), ("hwndFocus", w.HWND),
                        ("hwndCapture", w.HWND), ("hwndMenuOwner", w.HWND),
                        ("hwndMoveSize", w.HWND), ("hwndCaret", w.HWND),
                        ("rcCaret", w.RECT)]

        info = GUITHREADINFO(cbSize=ctypes.sizeof(GUITHREADINFO))
        tid = self.u.GetWindowThreadProcessId(hwnd, None)
        if not tid or not self.u.GetGUIThreadInfo(tid, ctypes.byref(info)):
            return "", 0
        focus = handle(info.hwndFocus)
        if not focus:
            return "", 0
        buf = ctypes.create_unicode_buffer(64)
        self.u.GetClassNameW(focus, buf, 64)
        return buf.value, int(self.u.GetWindowLongW(focus, GWL_STYLE)) & 0xFFFFFFFF

    def rect(self, hwnd: int) -> tuple[int, int, int, int] | None:
        """GetWindowRect (physical pixels once the process is per-monitor DPI aware, which
        mss makes it; the frame's invisible resize borders are included)."""
        r = self._t["w"].RECT()
        if not self.u.GetWindowRect(hwnd, ctypes.byref(r)):
            return None
        return int(r.left), int(r.top), int(r.right - r.left), int(r.bottom - r.top)

    def _pump(self, stop: threading.Event, on_message: Callable[[Any], bool],
              tick_seconds: float = 0.0) -> None:
        """GetMessageW loop on this thread until *stop* or ``on_message`` returns False."""
        w = self._t["w"]
        msg = w.MSG()
        self.u.PeekMessageW(ctypes.byref(msg), None, 0, 0, PM_NOREMOVE)  # create the queue
        tid = self.k.GetCurrentThreadId()
        timer = self.u.SetTimer(None, 0, int(tick_seconds * 1000), None) if tick_seconds else 0
        done = threading.Event()

        def waker() -> None:
            while not stop.wait(0.5):
                if done.is_set():
                    return
            self.u.PostThreadMessageW(tid, WM_QUIT, 0, 0)

        threading.Thread(target=waker, name="win32-waker", daemon=True).start()
        try:
            while True:
                got = self.u.GetMessageW(ctypes.byref(msg), None, 0, 0)
                if got == 0:
                    return  # WM_QUIT
                if got == -1:
                    raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined, unused-ignore]
                if not on_message(msg):
                    return
                self.u.TranslateMessage(ctypes.byref(msg))
                self.u.DispatchMessageW(ctypes.byref(msg))
        finally:
            done.set()
            if timer:
                self.u.KillTimer(None, timer)

    def run_window_events(self, on_event: Callable[[str, int, int, int], bool],
                          stop: threading.Event, tick_seconds: float) -> None:
        keep = [True]

        def on_foreground(hook: Any, event: int, hwnd: Any, id_object: int, id_child: int,
                          thread: int, time_ms: int) -> None:
            try:
                kind = "foreground" if event == EVENT_SYSTEM_FOREGROUND else "namechange"
                keep[0] = on_event(kind, handle(hwnd), id_object, id_child) and keep[0]
            except Exception:  # an exception must never unwind into user32
                log.exception("WinEvent callback failed")
            if not keep[0]:
                self.u.PostThreadMessageW(self.k.GetCurrentThreadId(), WM_QUIT, 0, 0)

        proc = self._t["WINEVENTPROC"](on_foreground)
        self._callbacks.append(proc)
        self._proc = proc
        hook = self.u.SetWinEventHook(EVENT_SYSTEM_FOREGROUND, EVENT_SYSTEM_FOREGROUND, None,
                                      proc, 0, 0, WINEVENT_OUTOFCONTEXT)
        if not hook:
            raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined, unused-ignore]
        on_event("tick", 0, 0, 0)  # the window focused before the hook was installed

        def on_message(msg: Any) -> bool:
            if msg.message == WM_TIMER and not msg.hWnd:
                keep[0] = on_event("tick", 0, 0, 0) and keep[0]
            return keep[0]

        try:
            self._pump(stop, on_message, tick_seconds)
        finally:
            self.hook_names(0)
            self.u.UnhookWinEvent(hook)
            self._callbacks.remove(proc)

    def hook_names(self, pid: int) -> None:
        if self._names_hook:
            self.u.UnhookWinEvent(self._names_hook)
            self._names_hook = None
        if pid and getattr(self, "_proc", None) is not None:
            self._names_hook = self.u.SetWinEventHook(
                EVENT_OBJECT_NAMECHANGE, EVENT_OBJECT_NAMECHANGE, None, self._proc, pid, 0,
                WINEVENT_OUTOFCONTEXT | WINEVENT_SKIPOWNPROCESS) or None

    # -- media -------------------------------------------------------------------------
    def _quiet_errors(self) -> None:
        """No "There is no disk in the drive" dialog for an empty card reader (this thread)."""
        w = self._t["w"]
        old = w.DWORD(0)
        self.k.SetThreadErrorMode(SEM_FAILCRITICALERRORS | SEM_NOOPENFILEERRORBOX,
                                  ctypes.byref(old))

    def drives(self) -> int:
        self._quiet_errors()
        return int(self.k.GetLogicalDrives())

    def drive_type(self, root: str) -> int:
        return int(self.k.GetDriveTypeW(root))

    def bus_type(self, root: str) -> int | None:
        w = self._t["w"]

        class QUERY(ctypes.Structure):  # STORAGE_PROPERTY_QUERY
            _fields_ = [("PropertyId", ctypes.c_int), ("QueryType", ctypes.c_int),
                        ("AdditionalParameters", ctypes.c_ubyte * 1)]

        class DESCRIPTOR(ctypes.Structure):  # STORAGE_DEVICE_DESCRIPTOR (fixed part)
            _fields_ = [("Version", w.DWORD), ("Size", w.DWORD), ("DeviceType", ctypes.c_ubyte),
                        ("DeviceTypeModifier", ctypes.c_ubyte),
                        ("RemovableMedia", ctypes.c_ubyte), ("CommandQueueing", ctypes.c_ubyte),
                        ("VendorIdOffset", w.DWORD), ("ProductIdOffset", w.DWORD),
                        ("ProductRevisionOffset", w.DWORD), ("SerialNumberOffset", w.DWORD),
                        ("BusType", ctypes.c_int), ("RawPropertiesLength", w.DWORD)]

        h = self.k.CreateFileW("\\\\.\\" + root[:2], 0, FILE_SHARE_READ | FILE_SHARE_WRITE,
                               None, OPEN_EXISTING, 0, None)
        if h is None or handle(h) == handle(-1):  # INVALID_HANDLE_VALUE
            return None
        try:
            query, desc, got = QUERY(0, 0), DESCRIPTOR(), w.DWORD(0)  # StorageDeviceProperty
            if not self.k.DeviceIoControl(h, IOCTL_STORAGE_QUERY_PROPERTY, ctypes.byref(query),
                                          ctypes.sizeof(query), ctypes.byref(desc),
                                          ctypes.sizeof(desc), ctypes.byref(got), None):
                return None
            return int(desc.BusType)
        finally:
            self.k.CloseHandle(h)

    def volume(self, root: str) -> tuple[str, str, int, int] | None:
        w = self._t["w"]
        label, fs = ctypes.create_unicode_buffer(261), ctypes.create_unicode_buffer(261)
        serial = w.DWORD(0)
        if not self.k.GetVolumeInformationW(root, label, 261, ctypes.byref(serial), None, None,
                                            fs, 261):
            return None  # ERROR_NOT_READY: no medium
        total = ctypes.c_ulonglong(0)
        self.k.GetDiskFreeSpaceExW(root, None, ctypes.byref(total), None)
        return label.value, fs.value, int(total.value), int(serial.value)

    def run_device_events(self, on_event: Callable[[str, int], None],
                          stop: threading.Event) -> None:
        """A hidden top-level window (message-only windows get no broadcasts) receiving
        WM_DEVICECHANGE; DEV_BROADCAST_VOLUME.dbcv_unitmask names the drive letters."""
        w, t = self._t["w"], self._t

        class HDR(ctypes.Structure):  # DEV_BROADCAST_VOLUME
            _fields_ = [("dbch_size", w.DWORD), ("dbch_devicetype", w.DWORD),
                        ("dbch_reserved", w.DWORD), ("dbcv_unitmask", w.DWORD),
                        ("dbcv_flags", w.WORD)]

        class WNDCLASSW(ctypes.Structure):
            _fields_ = [("style", w.UINT), ("lpfnWndProc", t["WNDPROC"]),
                        ("cbClsExtra", ctypes.c_int), ("cbWndExtra", ctypes.c_int),
                        ("hInstance", w.HINSTANCE), ("hIcon", w.HICON),
                        ("hCursor", w.HANDLE), ("hbrBackground", w.HBRUSH),
                        ("lpszMenuName", w.LPCWSTR), ("lpszClassName", w.LPCWSTR)]

        kinds = {DBT_DEVICEARRIVAL: "arrival", DBT_DEVICEREMOVECOMPLETE: "removed",
                 DBT_DEVICEQUERYREMOVE: "query_remove"}

        def wndproc(hwnd: Any, message: int, wparam: int, lparam: int) -> int:
            if message == WM_DEVICECHANGE and wparam in kinds and lparam:
                try:
                    hdr = HDR.from_address(lparam)
                    if hdr.dbch_devicetype == DBT_DEVTYP_VOLUME:
                        on_event(kinds[wparam], int(hdr.dbcv_unitmask))
                except Exception:
                    log.exception("WM_DEVICECHANGE handling failed")
                return 1  # TRUE: grant a query-remove
            return int(self.u.DefWindowProcW(hwnd, message, wparam, lparam))

        proc = t["WNDPROC"](wndproc)
        self._callbacks.append(proc)
        instance = self.k.GetModuleHandleW(None)
        cls = WNDCLASSW(lpfnWndProc=proc, hInstance=instance, lpszClassName="VigilDeviceWatch")
        self.u.RegisterClassW(ctypes.byref(cls))  # fails harmlessly if already registered
        hwnd = self.u.CreateWindowExW(0, "VigilDeviceWatch", "Vigil", 0, 0, 0, 0, 0, None,
                                      None, instance, None)
        if not hwnd:
            raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined, unused-ignore]
        try:
            self._pump(stop, lambda msg: True)
        finally:
            self.u.DestroyWindow(hwnd)
            self.u.UnregisterClassW("VigilDeviceWatch", instance)
            self._callbacks.remove(proc)
