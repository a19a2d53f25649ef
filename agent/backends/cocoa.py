"""The pyobjc calls behind :class:`agent.backends.macos.Api`. NOT YET RUN ON A REAL MAC.

Frameworks (pyobjc-framework-*): AppKit (NSWorkspace), Foundation (NSRunLoop, NSURL),
ApplicationServices (AXUIElement), Quartz (CGPreflightScreenCaptureAccess), DiskArbitration.
All imported inside methods; nothing happens at import time.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .macos import AX_NO_VALUE, AX_SUCCESS, Focused, MacVolume
from .mainloop import MainThreadCalls

T = TypeVar("T")

__all__ = ["Cocoa"]

log = logging.getLogger(__name__)

_VOLUME_KEYS = ("NSURLVolumeIsRemovableKey", "NSURLVolumeIsEjectableKey",
                "NSURLVolumeIsInternalKey", "NSURLVolumeIsLocalKey", "NSURLVolumeNameKey",
                "NSURLVolumeLocalizedFormatDescriptionKey", "NSURLVolumeTotalCapacityKey",
                "NSURLVolumeUUIDStringKey")


def _pool() -> Any:
    import objc

    return objc.autorelease_pool()


class Cocoa:
    """One per process (:meth:`shared`): the main loop and the sources share its state."""

    _shared: Cocoa | None = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        self._running = False
        #: Calls that must run on the main thread (TIS/TSM), drained between run-loop turns.
        self.calls = MainThreadCalls()

    @classmethod
    def shared(cls) -> Cocoa:
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    # -- main thread -------------------------------------------------------------------
    def run(self, until: threading.Event) -> None:
        """MainLoop.run: turn the main NSRunLoop in 0.25 s slices until *until* is set."""
        from AppKit import NSApplication, NSApplicationActivationPolicyProhibited
        from Foundation import NSDate, NSDefaultRunLoopMode, NSRunLoop

        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("the Cocoa run loop must run on the main thread")
        with _pool():
            # An accessory-less, Dock-less app object: needed for AppKit notifications.
            NSApplication.sharedApplication().setActivationPolicy_(
                NSApplicationActivationPolicyProhibited)
        loop = NSRunLoop.currentRunLoop()
        self._running = True
        try:
            while not until.is_set():
                with _pool():
                    self.calls.drain()
                    turned = loop.runMode_beforeDate_(
                        NSDefaultRunLoopMode, NSDate.dateWithTimeIntervalSinceNow_(0.05))
                if not turned:  # "returns immediately" with no input source attached
                    until.wait(0.05)
        finally:
            self._running = False
            self.calls.drain()

    def running(self) -> bool:
        return self._running

    main_loop_running = running

    def call_on_main(self, fn: Callable[[], T], timeout: float = 5.0) -> T:
        """Run *fn* on the main thread (between run-loop turns) and return its result."""
        return self.calls.call(fn, timeout)

    def secure_input(self) -> bool:
        """IsSecureEventInputEnabled() (Carbon), on the main thread: some application has
        turned on secure keyboard entry (a password field, Terminal's Secure Keyboard
        Entry), so no event tap sees keys until it is off."""
        def ask() -> bool:
            carbon = ctypes.CDLL("/System/Library/Frameworks/Carbon.framework/Carbon")
            carbon.IsSecureEventInputEnabled.restype = ctypes.c_bool
            carbon.IsSecureEventInputEnabled.argtypes = []
            return bool(carbon.IsSecureEventInputEnabled())

        return self.call_on_main(ask, timeout=2.0)

    def focused_field(self) -> tuple[int, object, str, str]:
        """(AXError, identity, role, subrole) of the system-wide focused UI element
        (``AXUIElementCreateSystemWide`` -> ``kAXFocusedUIElementAttribute``); the identity
        is (pid, CFHash), equal for CFEqual elements. Any thread; 0.25 s timeout."""
        import ApplicationServices as AS
        import CoreFoundation as CF

        with _pool():
            system = AS.AXUIElementCreateSystemWide()
            AS.AXUIElementSetMessagingTimeout(system, 0.25)
            err, element = AS.AXUIElementCopyAttributeValue(
                system, AS.kAXFocusedUIElementAttribute, None)
            if err != AX_SUCCESS or element is None:
                return (err if err != AX_SUCCESS else AX_NO_VALUE), None, "", ""
            e1, role = AS.AXUIElementCopyAttributeValue(element, AS.kAXRoleAttribute, None)
            e2, subrole = AS.AXUIElementCopyAttributeValue(element, AS.kAXSubroleAttribute,
                                                           None)
            e3, pid = AS.AXUIElementGetPid(element, None)
            identity = (int(pid) if e3 == AX_SUCCESS else 0, int(CF.CFHash(element)))
            return (e1, identity, str(role or "") if e1 == AX_SUCCESS else "",
                    str(subrole or "") if e2 == AX_SUCCESS else "")

    def observe_activation(self, on_app: Callable[[int, str], None]) -> Callable[[], None]:
        from AppKit import (
            NSWorkspace,
            NSWorkspaceApplicationKey,
            NSWorkspaceDidActivateApplicationNotification,
        )
        from Foundation import NSOperationQueue

        def block(note: Any) -> None:
            try:
                app = note.userInfo()[NSWorkspaceApplicationKey]
                on_app(int(app.processIdentifier()), str(app.localizedName() or ""))
            except Exception:  # never raise into AppKit
                log.exception("application-activation notification failed")

        center = NSWorkspace.sharedWorkspace().notificationCenter()
        # The main queue: the block runs on the main thread, inside the run loop above.
        token = center.addObserverForName_object_queue_usingBlock_(
            NSWorkspaceDidActivateApplicationNotification, None, NSOperationQueue.mainQueue(),
            block)
        return lambda: center.removeObserver_(token)

    # -- any thread --------------------------------------------------------------------
    def frontmost(self) -> tuple[int, str]:
        from AppKit import NSWorkspace

        with _pool():
            app = NSWorkspace.sharedWorkspace().frontmostApplication()
            if app is None:
                return 0, ""
            return int(app.processIdentifier()), str(app.localizedName() or "")

    def ax_trusted(self) -> bool:
        from ApplicationServices import AXIsProcessTrusted

        return bool(AXIsProcessTrusted())

    def focused(self, pid: int) -> Focused:
        import ApplicationServices as AS

        with _pool():
            app = AS.AXUIElementCreateApplication(pid)
            AS.AXUIElementSetMessagingTimeout(app, 0.5)  # a hung app must not hang us
            err, window = AS.AXUIElementCopyAttributeValue(app, AS.kAXFocusedWindowAttribute,
                                                           None)
            if err != AX_SUCCESS or window is None:
                return Focused(err if err != AX_SUCCESS else AX_NO_VALUE)
            err, title = AS.AXUIElementCopyAttributeValue(window, AS.kAXTitleAttribute, None)
            rect = self._rect(AS, window)
            secure = False
            e2, element = AS.AXUIElementCopyAttributeValue(app, AS.kAXFocusedUIElementAttribute,
                                                           None)
            if e2 == AX_SUCCESS and element is not None:
                e3, subrole = AS.AXUIElementCopyAttributeValue(element, AS.kAXSubroleAttribute,
                                                               None)
                secure = e3 == AX_SUCCESS and str(subrole) == "AXSecureTextField"
            return Focused(err, str(title or "") if err == AX_SUCCESS else "", rect, secure)

    @staticmethod
    def _rect(AS: Any, window: Any) -> tuple[int, int, int, int] | None:
        e1, pos = AS.AXUIElementCopyAttributeValue(window, AS.kAXPositionAttribute, None)
        e2, size = AS.AXUIElementCopyAttributeValue(window, AS.kAXSizeAttribute, None)
        if e1 != AX_SUCCESS or e2 != AX_SUCCESS:
            return None
        ok1, point = AS.AXValueGetValue(pos, AS.kAXValueCGPointType, None)
        ok2, extent = AS.AXValueGetValue(size, AS.kAXValueCGSizeType, None)
        if not (ok1 and ok2):
            return None
        return int(point.x), int(point.y), int(extent.width), int(extent.height)

    def screen_capture_allowed(self) -> bool:
        import Quartz

        preflight = getattr(Quartz, "CGPreflightScreenCaptureAccess", None)  # macOS 11+
        return bool(preflight()) if preflight is not None else True

    def volumes(self) -> list[MacVolume]:
        import Foundation

        root = Path("/Volumes")
        out: list[MacVolume] = []
        if not root.is_dir():
            return out
        for p in root.iterdir():
            with _pool():
                if p.is_symlink():
                    out.append(MacVolume(str(p), is_symlink=True))
                    continue
                url = Foundation.NSURL.fileURLWithPath_(str(p))
                keys = [getattr(Foundation, k) for k in _VOLUME_KEYS]
                values, _err = url.resourceValuesForKeys_error_(keys, None)
                v = dict(values or {})

                def get(key: str, v: dict[Any, Any] = v) -> Any:
                    return v.get(getattr(Foundation, key))

                out.append(MacVolume(
                    str(p), False, _bool(get("NSURLVolumeIsRemovableKey")),
                    _bool(get("NSURLVolumeIsEjectableKey")),
                    _bool(get("NSURLVolumeIsInternalKey")), _bool(get("NSURLVolumeIsLocalKey")),
                    self._protocol(str(p)), str(get("NSURLVolumeNameKey") or p.name),
                    str(get("NSURLVolumeLocalizedFormatDescriptionKey") or ""),
                    int(get("NSURLVolumeTotalCapacityKey") or 0),
                    str(get("NSURLVolumeUUIDStringKey") or "")))
        return out

    @staticmethod
    def _protocol(path: str) -> str:
        """DiskArbitration's DADeviceProtocol for the volume ("" when unavailable)."""
        try:
            import DiskArbitration as DA
            import Foundation
        except ImportError:
            return ""
        session = DA.DASessionCreate(None)
        url = Foundation.NSURL.fileURLWithPath_(path)
        disk = DA.DADiskCreateFromVolumePath(None, session, url) if session else None
        desc = DA.DADiskCopyDescription(disk) if disk else None
        return str((desc or {}).get(DA.kDADiskDescriptionDeviceProtocolKey) or "")


def _bool(value: Any) -> bool | None:
    return None if value is None else bool(value)
